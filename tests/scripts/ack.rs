//! ack.lua: fenced batch completion, records, lazy trimming.

use super::*;

#[tokio::test]
async fn ack_completes_owned_deliveries_and_rejects_stale_ones() {
    let mut f = fixture().await;
    let a = f.add(&[]).await;
    let b = f.add(&[("id", "job-b")]).await;
    let c = f.add(&[]).await;
    f.read("w1", 3).await;
    let _: () = f.conn.hset(&f.keys.index, "job-b", &b).await.unwrap();
    // c is taken over by w2 (delivery 2): w1's token 1 is stale.
    f.age("w1", &c, 100_000).await;
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&f.keys.ready)
        .arg(GROUP)
        .arg("w2")
        .arg(0)
        .arg(&c)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let items = [
        AckItem {
            delivery: d(&a, 1),
            job_id: &a,
            attempt: 1,
            result: b"\x01",
            touched: false,
        },
        AckItem {
            delivery: d(&b, 1),
            job_id: "job-b",
            attempt: 1,
            result: b"",
            touched: false,
        },
        AckItem {
            delivery: d(&c, 1),
            job_id: &c,
            attempt: 1,
            result: b"",
            touched: false,
        },
    ];
    let keys = f.keys.clone();
    let codes = ack_recorded(&mut f, &items, true).await;
    assert_eq!(codes, vec![true, true, false]);
    // a and b are gone from stream and PEL; c is untouched and still owned by w2 with 2 deliveries.
    assert!(!f.exists_in(&keys.ready, &a).await);
    assert!(!f.exists_in(&keys.ready, &b).await);
    assert!(f.pending(&a).await.is_none());
    assert_eq!(f.pending(&c).await.unwrap().0, "w2");
    assert!(f.exists_in(&keys.ready, &c).await);
    // Records: a has its result; b, a named job, has a compact one without (named jobs are looked up by their
    // id); c has no record; b's index entry is gone.
    let rec: std::collections::HashMap<String, Vec<u8>> =
        f.conn.hgetall(keys.job(&a)).await.unwrap();
    assert_eq!(rec["state"], b"completed");
    assert_eq!(rec["result"], b"\x01");
    assert_eq!(rec["finished_ms"], b"1234");
    let ttl: i64 = f.conn.pttl(keys.job(&a)).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000);
    let rec_b: std::collections::HashMap<String, Vec<u8>> =
        f.conn.hgetall(keys.job("job-b")).await.unwrap();
    assert!(!rec_b.contains_key("result"));
    assert_eq!(
        (
            &rec_b["state"][..],
            &rec_b["attempt"][..],
            &rec_b["finished_ms"][..]
        ),
        (&b"completed"[..], &b"1"[..], &b"1234"[..])
    );
    let ttl: i64 = f.conn.pttl(keys.job("job-b")).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000);
    let c_exists: bool = f.conn.exists(keys.job(&c)).await.unwrap();
    assert!(!c_exists);
    let idx: bool = f.conn.hexists(&keys.index, "job-b").await.unwrap();
    assert!(!idx);
    // One completed event lists the batch's completed jobs.
    assert_eq!(f.xlen(&keys.events).await, 1);
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(&keys.events)
        .arg("-")
        .arg("+")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let ev = rill::wire::parse_entries(v)
        .unwrap()
        .remove(0)
        .fields
        .unwrap();
    let get = |name: &str| {
        ev.iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(get("event").as_deref(), Some("completed"));
    assert_eq!(get("ids").unwrap(), format!("{a} job-b"));
    assert_eq!(get("count").as_deref(), Some("2"));
}

#[tokio::test]
async fn a_generated_id_keeps_no_record_but_leaves_the_index() {
    let mut f = fixture().await;
    let generated = "~1700000000000.00000000000000ff";
    let a = f.add(&[("id", generated)]).await;
    let b = f.add(&[("id", "chosen")]).await;
    f.read("w1", 2).await;
    let _: () = f.conn.hset(&f.keys.index, generated, &a).await.unwrap();
    let _: () = f.conn.hset(&f.keys.index, "chosen", &b).await.unwrap();
    let items = [
        AckItem {
            delivery: d(&a, 1),
            job_id: generated,
            attempt: 1,
            result: b"",
            touched: false,
        },
        AckItem {
            delivery: d(&b, 1),
            job_id: "chosen",
            attempt: 1,
            result: b"",
            touched: false,
        },
    ];
    let keys = f.keys.clone();
    let codes = ack_recorded(&mut f, &items, false).await;
    assert_eq!(codes, vec![true, true]);
    // The generated id's job is found by its event, like an entry-id job: no record. The chosen id keeps one.
    let generated_record: bool = f.conn.exists(keys.job(generated)).await.unwrap();
    let chosen_record: bool = f.conn.exists(keys.job("chosen")).await.unwrap();
    assert!(!generated_record && chosen_record);
    let index: usize = f.conn.hlen(&keys.index).await.unwrap();
    assert_eq!(index, 0, "both leave the index");
    assert_eq!(f.xlen(&keys.events).await, 1);
}

#[tokio::test]
async fn ack_without_retention_or_events_keeps_nothing() {
    let mut f = fixture().await;
    let a = f.add(&[]).await;
    f.read("w1", 1).await;
    let keys = f.keys.clone();
    let _: () = f.conn.hset(keys.job(&a), "progress", "x").await.unwrap();
    let items = [AckItem {
        delivery: d(&a, 1),
        job_id: &a,
        attempt: 1,
        result: b"\x01",
        touched: true,
    }];
    let codes = scripts::ack(
        &mut f.conn,
        &caller(&keys, "w1"),
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 0,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
            xackdel: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(codes, vec![true]);
    let exists: bool = f.conn.exists(keys.job(&a)).await.unwrap();
    assert!(
        !exists,
        "retention 0 deletes the record this delivery wrote"
    );
    assert_eq!(f.xlen(&keys.events).await, 0);
    // A second ack of the same delivery is stale (it is no longer pending).
    let codes = scripts::ack(
        &mut f.conn,
        &caller(&keys, "w1"),
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 0,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
            xackdel: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(codes, vec![false]);
}

/// Acks `items` as `w1` at 1234 ms, records kept 60 s (for named jobs and results), with a `completed` event;
/// `xackdel` as [`Ack::xackdel`].
async fn ack_recorded(f: &mut Fixture, items: &[AckItem<'_>], xackdel: bool) -> Vec<bool> {
    let keys = f.keys.clone();
    let call = Ack {
        now_ms: 1234,
        retention: Retention {
            ms: 60_000,
            keep_all: false,
        },
        completed_event: true,
        items,
        xackdel,
    };
    scripts::ack(&mut f.conn, &caller(&keys, "w1"), call)
        .await
        .unwrap()
}

/// Acks `ids` (delivery 1 to `w1`) in one call, without records or events; `xackdel` as [`Ack::xackdel`].
async fn ack_ids(f: &mut Fixture, ids: &[&str], xackdel: bool) -> Vec<bool> {
    let keys = f.keys.clone();
    let items: Vec<AckItem<'_>> = ids
        .iter()
        .map(|id| AckItem {
            delivery: d(id, 1),
            job_id: id,
            attempt: 1,
            result: b"",
            touched: false,
        })
        .collect();
    let call = Ack {
        now_ms: 1,
        retention: Retention {
            ms: 0,
            keep_all: false,
        },
        completed_event: false,
        items: &items,
        xackdel,
    };
    scripts::ack(&mut f.conn, &caller(&keys, "w1"), call)
        .await
        .unwrap()
}

async fn ack_one(f: &mut Fixture, id: &str, xackdel: bool) -> bool {
    ack_ids(f, &[id], xackdel).await[0]
}

async fn add_at(f: &mut Fixture, id: &str) -> String {
    redis::cmd("XADD")
        .arg(&f.keys.ready)
        .arg(id)
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(&b"\xf6"[..])
        .query_async(&mut f.conn)
        .await
        .unwrap()
}

/// Four entries close together in entry-id time (within the lazy window), the first three delivered to `w1`:
/// `old` (to stay pending), `a` and `b` (to finish), `waiting` (never delivered).
async fn old_two_finishing_and_one_waiting(f: &mut Fixture) -> [String; 4] {
    let mut ids = Vec::new();
    for id in ["5000-0", "5001-0", "5002-0", "5003-0"] {
        ids.push(add_at(f, id).await);
    }
    f.read("w1", 3).await;
    ids.try_into().unwrap()
}

#[tokio::test]
async fn ack_trims_finished_entries_below_the_oldest_unfinished_one() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let [old, a, b, waiting] = old_two_finishing_and_one_waiting(&mut f).await;
    assert!(ack_one(&mut f, &a, false).await);
    assert!(ack_one(&mut f, &b, false).await);
    // `old` is still pending: a and b linger, finished, behind it; the undelivered entry waits.
    assert_eq!(f.xlen(&keys.ready).await, 4);
    let state = scripts_state(&mut f, &a).await.0;
    assert_eq!(
        state, "unknown",
        "a finished entry awaiting the trim is not waiting"
    );
    assert_eq!(scripts_state(&mut f, &waiting).await.0, "waiting");
    // Finishing `old` trims everything finished, up to the first undelivered entry.
    assert!(ack_one(&mut f, &old, false).await);
    assert_eq!(f.xlen(&keys.ready).await, 1);
    assert!(f.exists_in(&keys.ready, &waiting).await);
}

#[tokio::test]
async fn ack_deletes_at_once_when_an_old_delivery_pins_the_head() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    // `old` is far behind in entry-id time (past the lazy window): a long job holding the head.
    add_at(&mut f, "1000-0").await;
    let a = add_at(&mut f, "900000-0").await;
    let b = add_at(&mut f, "900001-0").await;
    f.read("w1", 3).await;
    assert!(ack_one(&mut f, &a, false).await);
    assert!(ack_one(&mut f, &b, false).await);
    assert_eq!(
        f.xlen(&keys.ready).await,
        1,
        "only the pinned entry is left"
    );
}

#[tokio::test]
async fn ack_with_xackdel_deletes_entries_at_once_where_the_server_has_it() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let server = support::server_version(&mut f.conn).await;
    let [old, a, b, waiting] = old_two_finishing_and_one_waiting(&mut f).await;
    assert!(ack_one(&mut f, &a, true).await);
    assert!(ack_one(&mut f, &b, true).await);
    assert!(f.pending(&a).await.is_none() && f.pending(&b).await.is_none());
    if server.has_xackdel() {
        // XACKDEL removed a and b at once, though `old` is still pending ahead of them.
        assert_eq!(f.xlen(&keys.ready).await, 2, "on {server}");
        assert!(!f.exists_in(&keys.ready, &a).await);
    } else {
        // Older servers ignore the request and trim lazily (as above).
        assert_eq!(f.xlen(&keys.ready).await, 4, "on {server}");
    }
    assert_eq!(scripts_state(&mut f, &a).await.0, "unknown");
    assert!(ack_one(&mut f, &old, true).await);
    assert_eq!(f.xlen(&keys.ready).await, 1);
    assert!(f.exists_in(&keys.ready, &waiting).await);
    // A stale delivery changes nothing on either path.
    assert!(!ack_one(&mut f, &old, true).await);
    assert!(!ack_one(&mut f, &waiting, true).await);
    assert!(f.exists_in(&keys.ready, &waiting).await);
}

#[tokio::test]
async fn batches_over_eight_are_trimmed_even_where_xackdel_exists() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    add_at(&mut f, "7000-0").await;
    let mut ids = Vec::new();
    for i in 1..=9 {
        ids.push(add_at(&mut f, &format!("7000-{i}")).await);
    }
    f.read("w1", 10).await;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let codes = ack_ids(&mut f, &ids, true).await;
    assert_eq!(codes, vec![true; 9]);
    // Nine finished entries wait behind the pending 7000-0 for the trim, on every server.
    assert_eq!(f.xlen(&keys.ready).await, 10);
}

/// ack.lua's raw reply for `ids` (owned by `w1`) with their `tokens`: no records, no events.
async fn raw_ack(f: &mut Fixture, ids: &[String], tokens: &[u64]) -> redis::Value {
    let source = scripts::SOURCES
        .iter()
        .find(|(n, _)| *n == "ack.lua")
        .unwrap()
        .1;
    let script = redis::Script::new(source);
    let mut inv = script.key(&f.keys.ready);
    inv.key(&f.keys.index).key(&f.keys.events).key(&f.keys.held);
    inv.arg(GROUP).arg("w1").arg(1).arg(0).arg(0).arg("0");
    inv.arg(ids.len()).arg(1000).arg("0");
    for (id, t) in ids.iter().zip(tokens) {
        inv.arg(id).arg(t);
    }
    inv.invoke_async(&mut f.conn).await.unwrap()
}

#[tokio::test]
async fn ack_answers_the_count_when_all_completed_and_codes_otherwise() {
    use redis::Value::{Array, Int};
    let mut f = fixture().await;
    let ids = vec![
        add_at(&mut f, "7000-0").await,
        add_at(&mut f, "7001-0").await,
    ];
    f.read("w1", 2).await;
    // One token stale: a code per delivery (the first completes).
    assert_eq!(
        raw_ack(&mut f, &ids, &[1, 9]).await,
        Array(vec![Int(1), Int(0)])
    );
    // The first is gone now: a code per delivery again.
    assert_eq!(
        raw_ack(&mut f, &ids, &[1, 1]).await,
        Array(vec![Int(0), Int(1)])
    );
    // Both owned and current: the count alone.
    let more = vec![
        add_at(&mut f, "7002-0").await,
        add_at(&mut f, "7003-0").await,
    ];
    f.read("w1", 2).await;
    assert_eq!(raw_ack(&mut f, &more, &[1, 1]).await, Int(2));
}

#[tokio::test]
async fn ack_loads_its_script_again_where_the_server_has_lost_it() {
    let mut f = fixture().await;
    let ids = [
        add_at(&mut f, "8000-0").await,
        add_at(&mut f, "8001-0").await,
    ];
    f.read("w1", 2).await;
    // As after a restart without persistence or a failover to a replica that never ran it: the first call answers
    // NOSCRIPT, and the call loads the script and is sent again.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let sha = redis::Script::new(scripts::ack::SOURCE)
        .get_hash()
        .to_owned();
    assert!(!script_known(&mut f, &sha).await);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(ack_ids(&mut f, &refs, false).await, vec![true, true]);
    assert!(script_known(&mut f, &sha).await);
    assert!(f.pending(&ids[0]).await.is_none());
    assert!(f.pending(&ids[1]).await.is_none());
}

async fn script_known(f: &mut Fixture, sha: &str) -> bool {
    let known: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(sha)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    known == [1]
}
