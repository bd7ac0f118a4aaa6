//! purge.lua: dead letters deleted by age.

use super::*;

#[tokio::test]
async fn purge_deletes_dead_letters_older_than_the_cutoff() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    for (i, ms) in [1000, 2000, 3000].iter().enumerate() {
        f.seed_dead(&format!("{ms}-0"), &format!("j{i}"), &[]).await;
    }
    // A dead-index entry pointing at a newer death of the same job stays.
    let _: () = f.conn.hset(&keys.dead_index, "j0", "3000-0").await.unwrap();
    assert_eq!(
        scripts::purge(&mut f.conn, &keys, 2500, 10).await.unwrap(),
        2
    );
    let left: Vec<String> = f.conn.hkeys(&keys.dead_index).await.unwrap();
    let mut left = left;
    left.sort();
    assert_eq!(left, vec!["j0", "j2"]);
    assert!(f.exists_in(&keys.dead, "3000-0").await);
    // Nothing older left; 0 = every entry, in batches.
    assert_eq!(
        scripts::purge(&mut f.conn, &keys, 2500, 10).await.unwrap(),
        0
    );
    assert_eq!(scripts::purge(&mut f.conn, &keys, 0, 10).await.unwrap(), 1);
    let len: u64 = f.conn.xlen(&keys.dead).await.unwrap();
    assert_eq!(len, 0);
}
