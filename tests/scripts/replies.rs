//! Replies a server that does not follow SPEC.md could send: each script's call turns a return code its header does
//! not list, or a reply of the wrong shape, into `Error::Protocol` naming the script (never a panic, never a guess).
//! No Redis here: a canned connection answers every command with one value.

use redis::Value;
use rill::Error;
use rill::keys::QueueKeys;
use rill::scripts::{
    self, Ack, AckItem, Adopt, BeatFields, DeliveryRef, Fail, FailMode, NewJob, Reclaim,
    RecordField, Retention, SignalSend, Update,
};
use rill::wire::DeadReason;

use super::support::caller;

/// Answers every command with the same value.
struct Canned(Value);

impl redis::aio::ConnectionLike for Canned {
    fn req_packed_command<'a>(&'a mut self, _: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        let v = self.0.clone();
        Box::pin(async move { Ok(v) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _: &'a redis::Pipeline,
        _: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        let v = vec![self.0.clone(); count];
        Box::pin(async move { Ok(v) })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

fn ints(v: &[i64]) -> Value {
    Value::Array(v.iter().map(|i| Value::Int(*i)).collect())
}

/// The error must be a protocol error about `script` whose detail contains `needle`.
#[track_caller]
fn refused<T: std::fmt::Debug>(r: rill::Result<T>, script: &str, needle: &str) {
    match r {
        Err(Error::Protocol { what, detail }) => {
            assert_eq!(what, script, "{detail}");
            assert!(detail.contains(needle), "{script}: {detail}");
        }
        other => panic!("{script}: expected a protocol error with {needle:?}, got {other:?}"),
    }
}

const D: DeliveryRef<'static> = DeliveryRef {
    entry_id: "1-0",
    token: 1,
};

#[tokio::test]
async fn unlisted_return_codes_are_protocol_errors() {
    let keys = QueueKeys::new("t", "q").unwrap();
    let c = caller(&keys, "w");
    let unknown = "unknown code";
    let mut con = Canned(ints(&[9, 0]));

    let fail = Fail {
        delivery: D,
        job_id: "j",
        now_ms: 1,
        mode: FailMode::Dead(DeadReason::Failed),
        error: "e",
    };
    refused(scripts::fail(&mut con, &c, fail).await, "fail.lua", unknown);
    let job = NewJob {
        job_id: "j",
        dedup_key: "",
        dedup_ttl_ms: 0,
        due_ms: 0,
        now_ms: 1,
        fields: &[],
        priority: 0,
    };
    let mut code_id = Canned(Value::Array(vec![
        Value::Int(9),
        Value::BulkString(b"1-0".to_vec()),
    ]));
    refused(
        scripts::enqueue(&mut code_id, &keys, job).await,
        "enqueue.lua",
        unknown,
    );
    let write = scripts::CheckpointWrite {
        version: 1,
        label: "",
        state: b"s",
        keep: 1,
        ttl_ms: 1,
        max_bytes: 10,
    };
    refused(
        scripts::checkpoint(&mut con, &c, D, "j", 1, write).await,
        "checkpoint.lua",
        unknown,
    );
    let send = SignalSend {
        kind: "cancel",
        target: "job:j",
        sender: "s",
        now_ms: 1,
        payload: b"",
        maxlen: 10,
        retention_ms: 1,
    };
    let mut id_code = Canned(Value::Array(vec![
        Value::BulkString(b"1-0".to_vec()),
        Value::Int(9),
    ]));
    refused(
        scripts::signal(&mut id_code, &keys, send).await,
        "signal.lua",
        unknown,
    );

    let mut one = Canned(ints(&[9]));
    refused(
        scripts::release(&mut one, &c, 1, &[D]).await,
        "release.lua",
        unknown,
    );
    refused(
        scripts::requeue(&mut one, &keys, 1, 10, &["1-0"]).await,
        "requeue.lua",
        unknown,
    );
    let mut bare = Canned(Value::Int(9));
    refused(
        scripts::park(&mut bare, &c, D, 1).await,
        "park.lua",
        unknown,
    );
}

#[tokio::test]
async fn replies_of_the_wrong_shape_are_protocol_errors() {
    let keys = QueueKeys::new("t", "q").unwrap();
    let c = caller(&keys, "w");
    // A bare integer where every script answers with an array.
    let mut con = Canned(Value::Int(1));
    let array = "expected an array";
    let item = AckItem {
        delivery: D,
        job_id: "j",
        attempt: 1,
        result: b"",
        touched: false,
    };
    let ack = Ack {
        now_ms: 1,
        retention: Retention {
            ms: 1,
            keep_all: false,
        },
        completed_event: true,
        items: &[item],
        xackdel: true,
    };
    // ack.lua answers every-delivery-completed with the count: any other count is wrong.
    refused(
        scripts::ack(&mut Canned(Value::Int(2)), &c, ack).await,
        "ack.lua",
        "2 completed of 1",
    );
    refused(
        scripts::extend(&mut con, &c, &[D]).await,
        "extend.lua",
        array,
    );
    let adopt = Adopt {
        crashed: "x",
        now_ms: 1,
        crash_after_ms: 1,
        count: 1,
        levels: 1,
    };
    refused(
        scripts::adopt(&mut con, &c, adopt).await,
        "adopt.lua",
        array,
    );
    let reclaim = Reclaim {
        min_idle_ms: 1,
        cursor: "0-0",
        count: 1,
        now_ms: 1,
    };
    refused(
        scripts::reclaim(&mut con, &c, reclaim).await,
        "reclaim.lua",
        array,
    );
    refused(
        scripts::state(&mut con, &keys, "j").await,
        "state.lua",
        array,
    );
    refused(
        scripts::heartbeat(
            &mut con,
            &keys,
            super::beating("w", 1, BeatFields::default()),
        )
        .await,
        "heartbeat.lua",
        array,
    );
    refused(
        scripts::promote(&mut con, &keys, 1, 10, 10).await,
        "promote.lua",
        array,
    );

    // Arrays whose items are not what the header says.
    let mut strings = Canned(Value::Array(vec![
        Value::Nil,
        Value::Nil,
        Value::Nil,
        Value::Nil,
        Value::Nil,
        Value::Nil,
        Value::Nil,
    ]));
    refused(
        scripts::state(&mut strings, &keys, "j").await,
        "state.lua",
        "expected a string",
    );
    let mut taken = Canned(Value::Array(vec![
        Value::Int(1),
        Value::Int(2),
        Value::Int(0),
    ]));
    let adopt = Adopt {
        crashed: "x",
        now_ms: 1,
        crash_after_ms: 1,
        count: 1,
        levels: 1,
    };
    refused(
        scripts::adopt(&mut taken, &c, adopt).await,
        "adopt.lua",
        "expected an array",
    );
    let mut cursor = Canned(Value::Array(vec![
        Value::BulkString(b"0-0".to_vec()),
        Value::Array(vec![Value::Int(3)]),
        Value::Int(0),
        Value::Int(0),
    ]));
    let reclaim = Reclaim {
        min_idle_ms: 1,
        cursor: "0-0",
        count: 1,
        now_ms: 1,
    };
    refused(
        scripts::reclaim(&mut cursor, &c, reclaim).await,
        "reclaim.lua",
        "",
    );
    let mut beat = Canned(Value::Array(vec![
        Value::Nil,
        Value::Int(1),
        Value::Array(vec![]),
    ]));
    refused(
        scripts::heartbeat(
            &mut beat,
            &keys,
            super::beating("w", 1, BeatFields::default()),
        )
        .await,
        "heartbeat.lua",
        "expected a string",
    );
    // The crashed workers must be a list of names.
    let mut beat = Canned(Value::Array(vec![
        Value::BulkString(b"1-0".to_vec()),
        Value::Int(0),
        Value::Int(3),
    ]));
    refused(
        scripts::heartbeat(
            &mut beat,
            &keys,
            super::beating("w", 1, BeatFields::default()),
        )
        .await,
        "heartbeat.lua",
        "expected an array",
    );
    let update = Update {
        delivery: D,
        job_id: "j",
        field: RecordField::Progress,
        value: b"1",
        ttl_ms: 1,
    };
    let mut odd = Canned(Value::Array(vec![]));
    refused(
        scripts::update(&mut odd, &c, update).await,
        "update.lua",
        "",
    );
}
