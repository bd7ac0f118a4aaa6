//! The raw Redis Streams ceiling rill is measured against: pipelined `XADD`, and `XREADGROUP` + `XACK` with no
//! job logic. Used by `rill bench` and by `benches/throughput.rs` (which includes this file), so both compare
//! against the same loop, and read CPU the same way ([`Cpu`]).

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

/// Reads and acks `n` entries of `key` through a new group, `count` per read; returns how long it took. With
/// `delete`, each batch is also deleted (`XDEL`, in the same round trip as its `XACK`): what a queue that frees
/// the entries it finished must do at least.
pub async fn drain(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    n: u64,
    count: usize,
    delete: bool,
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
        let mut pipe = redis::pipe();
        pipe.cmd("XACK").arg(key).arg("g").arg(&ids).ignore();
        if delete {
            pipe.cmd("XDEL").arg(key).arg(&ids).ignore();
        }
        let _: () = pipe.query_async(conn).await?;
        done += ids.len() as u64;
    }
    Ok(t.elapsed())
}

/// CPU seconds used so far by Redis (`INFO cpu`: none if the user may not run INFO) and by this process (Linux
/// `/proc/self/stat`), or, after [`Cpu::since`], used in between.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub redis: Option<f64>,
    pub own: Option<f64>,
}

impl Cpu {
    /// The readings now.
    pub async fn now(conn: &mut redis::aio::MultiplexedConnection) -> Cpu {
        let info: Option<String> = redis::cmd("INFO").arg("cpu").query_async(conn).await.ok();
        let redis = info.map(|i| {
            i.lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
                .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
                .sum()
        });
        Cpu {
            redis,
            own: Self::own_now(),
        }
    }

    /// CPU seconds this process has used so far (Linux `/proc/self/stat`; `None` elsewhere).
    pub fn own_now() -> Option<f64> {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                // utime and stime, the 12th and 13th fields after the command name, in clock ticks of 1/100 s.
                let f: Vec<f64> = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|v| v.parse().ok())
                    .collect();
                (f.len() == 2).then(|| (f[0] + f[1]) / 100.0)
            })
    }

    /// What was used between `before` and these readings.
    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            redis: self.redis.zip(before.redis).map(|(a, b)| a - b),
            own: self.own.zip(before.own).map(|(a, b)| a - b),
        }
    }
}
