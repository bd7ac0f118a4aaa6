//! The raw Redis Streams ceiling rill is measured against: pipelined `XADD`, and `XREADGROUP` + `XACK` with no
//! job logic. Used by `rill bench` and by `benches/throughput.rs` (which includes this file), so both compare
//! against the same loop.

use std::time::{Duration, Instant};

use anyhow::bail;

/// Entries per pipelined round trip (raw and rill alike).
pub const PIPELINE: u64 = 1000;

/// Adds `n` entries (`v`, `payload(i)`) to `key`, pipelined; returns how long it took.
pub async fn enqueue(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    n: u64,
    payload: impl Fn(u64) -> Vec<u8>,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut next = 0;
    while next < n {
        let end = (next + PIPELINE).min(n);
        let mut pipe = redis::pipe();
        for i in next..end {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("v")
                .arg("1")
                .arg("payload")
                .arg(payload(i))
                .ignore();
        }
        let _: () = pipe.query_async(conn).await?;
        next = end;
    }
    Ok(t.elapsed())
}

/// Reads and acks `n` entries of `key` through a new group, `count` per read; returns how long it took.
pub async fn drain(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    n: u64,
    count: usize,
) -> anyhow::Result<Duration> {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("g")
        .arg("0")
        .query_async(conn)
        .await?;
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(conn)
            .await?;
        let ids: Vec<String> = rill::wire::parse_read_reply(v)?
            .into_iter()
            .map(|e| e.id)
            .collect();
        if ids.is_empty() {
            bail!("raw drain ran dry after {done} of {n} entries");
        }
        let _: () = redis::cmd("XACK")
            .arg(key)
            .arg("g")
            .arg(&ids)
            .query_async(conn)
            .await?;
        done += ids.len() as u64;
    }
    Ok(t.elapsed())
}
