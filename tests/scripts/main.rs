//! Every Lua script run directly: seed keys, run it, assert the raw Redis state and the return code. One module
//! per script: `lua/X.lua` is tested in `tests/scripts/X.rs`. Also checks that the flattened scripts in `lua/`
//! (and the copies in `clients/python/rill/lua/` and `clients/typescript/lua/`) are what `lua/src/` and `lua/lib/` make of them
//! (`RILL_BLESS=1 cargo test --test scripts` rewrites them).

#[path = "../support/mod.rs"]
mod support;

mod ack;
mod adopt;
mod checkpoint;
mod delete;
mod drain;
mod enqueue;
mod extend;
mod fail;
mod fire;
mod heartbeat;
mod levels;
mod limit;
mod park;
mod permissions;
mod promote;
mod purge;
mod reclaim;
mod release;
mod replies;
mod requeue;
mod retire;
mod run_now;
mod signal;
mod state;
mod update;

use std::path::Path;

use redis::AsyncCommands;
use rill::keys::{GROUP, QueueKeys};
use rill::scripts::{
    self, Ack, AckItem, Adopt, BeatFields, Deleted, DeliveryRef, Drained, Enqueued, Fail, FailMode,
    FailOutcome, HandBack, Heartbeat, NewJob, Reclaim, RecordField, Retention, RunNow,
    SignalApplied, SignalSend, Update,
};
use rill::wire::DeadReason;
use support::{TestRedis, caller};

type Conn = support::AConn;

/// A heartbeat call of `consumer` at `now_ms` (heartbeats MAXLEN 100, record TTL 60 s) that lists no crashed
/// workers.
fn beating<'a>(consumer: &'a str, now_ms: u64, fields: BeatFields<'a>) -> Heartbeat<'a> {
    Heartbeat {
        consumer,
        now_ms,
        maxlen: 100,
        record_ttl_ms: 60_000,
        crash_after_ms: 0,
        fields,
    }
}

struct Fixture {
    _redis: TestRedis,
    conn: Conn,
    keys: QueueKeys,
}

async fn fixture() -> Fixture {
    let redis = TestRedis::start_cluster();
    let mut conn = redis.aconn().await;
    let keys = QueueKeys::new(&support::namespace(), "q").unwrap();
    support::create_group(&mut conn, &keys).await;
    Fixture {
        _redis: redis,
        conn,
        keys,
    }
}

impl Fixture {
    async fn add(&mut self, extra: &[(&str, &str)]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.ready)
            .arg("*")
            .arg("v")
            .arg("1")
            .arg("payload")
            .arg(&b"\xf6"[..]);
        for (k, v) in extra {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut self.conn).await.unwrap()
    }

    /// Delivers up to `n` new entries to `consumer`.
    async fn read(&mut self, consumer: &str, n: usize) -> Vec<String> {
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(n)
            .arg("STREAMS")
            .arg(&self.keys.ready)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .unwrap();
        rill::wire::parse_read_reply(v)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    /// Back-dates a pending entry to idle `ms` under `consumer` (XCLAIM IDLE; bumps nothing with JUSTID).
    async fn age(&mut self, consumer: &str, id: &str, ms: u64) {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&self.keys.ready)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(id)
            .arg("IDLE")
            .arg(ms)
            .arg("JUSTID")
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }

    /// (owner, idle ms, deliveries) of a pending entry.
    async fn pending(&mut self, id: &str) -> Option<(String, u64, u64)> {
        let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.keys.ready)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        v.into_iter().next().map(|(_, c, idle, n)| (c, idle, n))
    }

    async fn exists_in(&mut self, stream: &str, id: &str) -> bool {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(id)
            .arg(id)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        !rill::wire::parse_entries(v).unwrap().is_empty()
    }

    async fn fields(
        &mut self,
        stream: &str,
        id: &str,
    ) -> std::collections::HashMap<String, Vec<u8>> {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(id)
            .arg(id)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        let e = rill::wire::parse_entries(v).unwrap().remove(0);
        e.fields
            .unwrap()
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), v))
            .collect()
    }

    async fn xlen(&mut self, stream: &str) -> u64 {
        self.conn.xlen(stream).await.unwrap()
    }
}

fn d(entry_id: &str, token: u64) -> DeliveryRef<'_> {
    DeliveryRef { entry_id, token }
}

impl Fixture {
    /// Seeds one dead letter the way fail.lua writes it; returns its dead-letter entry id.
    async fn seed_dead(&mut self, dead_id: &str, job: &str, extra: &[(&str, &str)]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.dead).arg(dead_id);
        for (k, v) in [
            ("dead_reason", "failed"),
            ("dead_error", "boom"),
            ("dead_ms", "1"),
            ("dead_entry", "1-1"),
            ("dead_attempts", "3"),
            ("dead_job", job),
            ("v", "1"),
            ("attempts", "2"),
            ("last_error", "older"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            cmd.arg(k).arg(v);
        }
        cmd.arg("payload").arg(&b"\xf6"[..]);
        let did: String = cmd.query_async(&mut self.conn).await.unwrap();
        let _: () = self
            .conn
            .hset(&self.keys.dead_index, job, &did)
            .await
            .unwrap();
        did
    }
}

/// Runs state.lua: (state, entry id, attempts made, owner, deliveries).
async fn scripts_state(f: &mut Fixture, id: &str) -> (String, String, u64, String, u64) {
    let keys = f.keys.clone();
    let r = scripts::state(&mut f.conn, &keys, id).await.unwrap();
    (r.state, r.entry_id, r.attempts, r.owner, r.deliveries)
}

#[tokio::test]
async fn every_script_declares_the_shebang_so_undeclared_keys_fail() {
    for (name, src) in scripts::SOURCES {
        assert!(src.starts_with("#!lua"), "{name} must start with #!lua");
        for section in ["-- KEYS[1]", "-- ARGV[1]", "Returns"] {
            assert!(src.contains(section), "{name}: header lacks {section}");
        }
    }
    // And the test server enforces slots: a shebang script touching a key outside its declared keys' slot
    // errors, so the fixture above would catch such a script.
    let redis = TestRedis::start_cluster();
    let mut conn = redis.aconn().await;
    let r: redis::RedisResult<()> =
        redis::Script::new("#!lua\nreturn redis.call('GET', 'undeclared')")
            .key("{q}:x")
            .invoke_async(&mut conn)
            .await;
    assert!(r.is_err());
}

/// `lua/src/<name>` with every `--- @include "lib/X"` line replaced by `lua/lib/X.lua` (itself expanded; each
/// library once per script).
fn flatten(name: &str) -> String {
    fn expand(text: &str, dir: &Path, seen: &mut Vec<String>, out: &mut String) {
        for line in text.lines() {
            let include = line
                .strip_prefix("--- @include \"")
                .and_then(|l| l.strip_suffix('"'));
            match include {
                Some(lib) if seen.iter().any(|s| s == lib) => {}
                Some(lib) => {
                    seen.push(lib.to_owned());
                    let path = dir.join(format!("{lib}.lua"));
                    let text = std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    expand(&text, dir, seen, out);
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
    let src = std::fs::read_to_string(dir.join("src").join(name)).unwrap();
    let mut out = String::new();
    expand(&src, &dir, &mut Vec::new(), &mut out);
    out
}

#[test]
fn flattened_scripts_match_their_sources() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
    let bless = std::env::var_os("RILL_BLESS").is_some();
    let mut sources: Vec<String> = std::fs::read_dir(dir.join("src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    sources.sort();
    let loaded: Vec<&str> = scripts::SOURCES.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        sources.len(),
        loaded.len(),
        "one source per loaded script: {sources:?}"
    );
    let mut stale = Vec::new();
    for name in &sources {
        assert!(
            loaded.contains(&name.as_str()),
            "{name} is not loaded by src/scripts/"
        );
        let flat = flatten(name);
        // The flattened script, and the copies the Python and TypeScript packages ship.
        let python = dir.join("../clients/python/rill/lua").join(name);
        let typescript = dir.join("../clients/typescript/lua").join(name);
        for path in [dir.join(name), python, typescript] {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(flat.as_str()) {
                if bless {
                    std::fs::write(&path, &flat).unwrap();
                } else {
                    stale.push(path.display().to_string());
                }
            }
        }
        assert!(
            !flat.contains("@include"),
            "{name}: an include was not expanded"
        );
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from lua/src + lua/lib: run `RILL_BLESS=1 cargo test --test scripts flattened`"
    );
}

/// Enqueues `id` through enqueue.lua (dedup record on its id), due at `due_ms` (0 = ready now), with `extra` fields.
async fn enqueue_job(f: &mut Fixture, id: &str, due_ms: u64, extra: &[(&str, &[u8])]) {
    let keys = f.keys.clone();
    let mut fields: Vec<(&str, &[u8])> = vec![("v", b"1"), ("payload", b"\xf6")];
    fields.extend_from_slice(extra);
    scripts::enqueue(
        &mut f.conn,
        &keys,
        NewJob {
            job_id: id,
            dedup_key: id,
            dedup_ttl_ms: 60_000,
            due_ms,
            now_ms: 100,
            fields: &fields,
            priority: 0,
        },
    )
    .await
    .unwrap();
}

/// The newest `count` entries of `stream`, newest first, as `T` reads them.
async fn newest<T: redis::FromRedisValue>(f: &mut Fixture, stream: &str, count: usize) -> T {
    redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut f.conn)
        .await
        .unwrap()
}

/// The newest entry of the events stream.
async fn last_event(f: &mut Fixture) -> std::collections::HashMap<String, String> {
    let events = f.keys.events.clone();
    let v: redis::Value = newest(f, &events, 1).await;
    rill::wire::parse_entries(v)
        .unwrap()
        .remove(0)
        .fields
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

/// The consumer group's `lag` as XINFO GROUPS reports it (`None`: nil, Redis cannot tell).
async fn group_lag(f: &mut Fixture) -> Option<i64> {
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&f.keys.ready)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    match groups[0].get("lag") {
        Some(redis::Value::Int(n)) => Some(*n),
        _ => None,
    }
}
