//! Reading a queue's priority levels for the fetch loop: the order the levels' streams are asked in one round
//! trip, and one blocking read over all of them when none has entries.

use crate::keys::GROUP;
use crate::wire::{self, RawEntry};

/// Reads up to `count` new entries from the priority levels in `order`: the first level that has entries first,
/// then the next ones while room is left. A level `drained` (its last read found less than asked) is read in the
/// same round trip as the level after it, so a backlog on a low level costs one round trip per read, not one per
/// level above it; if a drained level had new entries meanwhile, the read brings more than `count` (at most
/// `count` per drained level). With nothing on any level, one blocking read on all of them (which may bring up to
/// `count` from each). Returns the entries, highest level first, and whether they came from the blocking read.
/// A queue with one level is one blocking read, as before priorities.
pub(super) async fn read_levels(
    c: &mut crate::client::BlockingConn,
    keys: &crate::keys::QueueKeys,
    consumer: &str,
    order: &[u8],
    count: usize,
    block_ms: u64,
    drained: &mut [bool],
) -> redis::RedisResult<(Vec<(u8, RawEntry)>, bool)> {
    let read = |streams: Vec<&str>, count: usize, block: Option<u64>| {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(ms) = block {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&streams);
        for _ in &streams {
            cmd.arg(">");
        }
        cmd
    };
    let parse = |v: redis::Value, out: &mut Vec<(u8, RawEntry)>| {
        match wire::parse_read_reply_by_stream(v) {
            Ok(streams) => {
                for (stream, entries) in streams {
                    let level = order
                        .iter()
                        .copied()
                        .find(|&l| keys.level(l) == stream)
                        .unwrap_or(0);
                    out.extend(entries.into_iter().map(|e| (level, e)));
                }
            }
            Err(e) => tracing::error!(error = %e, "fetch: unreadable reply"),
        }
    };
    let mut out = Vec::new();
    if let [level] = order {
        let v = read(vec![keys.level(*level)], count, Some(block_ms))
            .query_async(c)
            .await?;
        parse(v, &mut out);
        return Ok((out, true));
    }
    let mut next = 0;
    while next < order.len() && out.len() < count {
        let want = count - out.len();
        let mut pipe = redis::pipe();
        let mut asked = Vec::new();
        while let Some(&level) = order.get(next) {
            pipe.add_command(read(vec![keys.level(level)], want, None));
            asked.push(level);
            next += 1;
            if !drained.get(usize::from(level)).copied().unwrap_or(false) {
                break;
            }
        }
        let replies: Vec<redis::Value> = pipe.query_async(c).await?;
        for (level, v) in asked.into_iter().zip(replies) {
            let before = out.len();
            parse(v, &mut out);
            if let Some(d) = drained.get_mut(usize::from(level)) {
                *d = out.len() - before < want;
            }
        }
    }
    if !out.is_empty() {
        return Ok((out, false));
    }
    let all = order.iter().map(|&l| keys.level(l)).collect();
    let v = read(all, count, Some(block_ms)).query_async(c).await?;
    parse(v, &mut out);
    // Highest priority first (the reply's order is the streams').
    out.sort_by_key(|(l, _)| order.iter().position(|o| o == l));
    Ok((out, true))
}
