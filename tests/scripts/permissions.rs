//! permissions.lua: every command a worker needs, checked against the caller's ACL without running any.

use super::*;

async fn check_as(f: &Fixture, user: Option<&str>) -> Option<String> {
    try_as(f, user).await.unwrap()
}

async fn try_as(f: &Fixture, user: Option<&str>) -> rill::Result<Option<String>> {
    let mut conn = match user {
        None => f.conn.clone(),
        Some(u) => {
            let url = format!("redis://{u}:pw@127.0.0.1:{}", f._redis.port());
            support::AConn::Node(
                redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            )
        }
    };
    scripts::permissions(&mut conn, &caller(&f.keys, "w1")).await
}

#[tokio::test]
async fn permissions_names_the_first_command_refused() {
    let mut f = fixture().await;
    assert_eq!(
        check_as(&f, None).await,
        None,
        "the default user may run everything"
    );
    for (user, rules, refused) in [
        ("noclaim", &["-xclaim"][..], "XCLAIM "),
        ("nosignals", &["-xread"][..], "XREAD "),
        ("notime", &["-time"][..], "TIME"),
    ] {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg(&["on", ">pw", "~*", "&*", "+@all"])
            .arg(rules)
            .query_async(&mut f.conn)
            .await
            .unwrap();
        let got = check_as(&f, Some(user)).await.expect("a refusal");
        assert!(got.starts_with(refused), "{user}: {got}");
    }
    // Keys outside the user's patterns: Redis refuses the script call itself.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("nokeys")
        .arg(&["on", ">pw", "~other:*", "&*", "+@all"])
        .query_async(&mut f.conn)
        .await
        .unwrap();
    match try_as(&f, Some("nokeys")).await {
        Err(rill::Error::Redis(e)) => assert_eq!(e.code(), Some("NOPERM"), "{e}"),
        other => panic!("expected NOPERM, got {other:?}"),
    }
}
