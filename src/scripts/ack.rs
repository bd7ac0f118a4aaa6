//! `ack.lua`: completes a batch of deliveries (fenced), writes records and one `completed` event.

use redis::{Value, aio::ConnectionLike};

use super::reply::{self, codes};
use super::{Caller, DeliveryRef, Eval};
use crate::error::Result;
use crate::keys::GROUP;

script!("ack.lua");

/// One completion for [`ack`].
#[derive(Debug, Clone, Copy)]
pub struct AckItem<'a> {
    /// The delivery being completed.
    pub delivery: DeliveryRef<'a>,
    /// Job id.
    pub job_id: &'a str,
    /// Attempt number of this delivery.
    pub attempt: u32,
    /// CBOR result; empty = none.
    pub result: &'a [u8],
    /// Whether this delivery wrote the job record (progress, data) or checkpoints, which must go (after the
    /// retention, for checkpoints) once the job is done.
    pub touched: bool,
}

/// Default lazy window of [`ack`]: finished entries may linger until the oldest unfinished entry ahead of them
/// finishes, as long as it is no more than this far behind (entry-id time); past it they are deleted at once.
pub const LAZY_WINDOW_MS: u64 = 1000;

/// Record policy for [`ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long a completed record lives, ms; 0 = write none.
    pub ms: u64,
    /// Write a record for every completed job, not only those with a result.
    pub keep_all: bool,
}

/// One [`ack`] call.
#[derive(Debug, Clone, Copy)]
pub struct Ack<'a> {
    /// The clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// Which records to write.
    pub retention: Retention,
    /// Whether to write the batch's `completed` event (trimmed to the caller's `events_maxlen`).
    pub completed_event: bool,
    /// The completions, in any order.
    pub items: &'a [AckItem<'a>],
    /// Allow acking and deleting a small batch with one `XACKDEL` instead of `XACK` and a trim (cheaper for
    /// batches of up to 8), where the server has it ([`crate::ServerVersion::has_xackdel`]; the script checks the
    /// version again, so `true` is safe on any server).
    pub xackdel: bool,
}

/// Orders stream ids numerically (`ms-seq`); unparsable ids sort last, by text.
fn id_key(id: &str) -> (u64, u64, &str) {
    match id.split_once('-') {
        Some((a, b)) => (
            a.parse().unwrap_or(u64::MAX),
            b.parse().unwrap_or(u64::MAX),
            id,
        ),
        None => (u64::MAX, u64::MAX, id),
    }
}

/// Completes deliveries: one flag per item, in the caller's order; `true` = completed, `false` = stale (no
/// effect).
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn ack<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
    call: Ack<'_>,
) -> Result<Vec<bool>> {
    let items = call.items;
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let keys = caller.keys;
    let retention = call.retention;
    // The script checks ownership over the batch's id range, so it wants ascending ids.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_cached_key(|&i| id_key(items[i].delivery.entry_id));
    // Only deliveries with something beyond the ack itself pass their job id, result and record key.
    let extra = |it: &AckItem<'_>| {
        let needs_record = retention.ms > 0 && (retention.keep_all || !it.result.is_empty());
        // An unnamed job's id is its entry id (`<entry id>@<level>` above level 0): nothing to pass for it.
        let unnamed = it.job_id == crate::priority::address(caller.level, it.delivery.entry_id);
        !unnamed || needs_record || it.touched
    };
    let extras = || {
        order
            .iter()
            .enumerate()
            .map(|(pos, &i)| (pos + 1, &items[i]))
            .filter(|(_, it)| extra(it))
    };
    let n_extras = extras().count();
    let mut inv = Eval::new(
        &SCRIPT,
        4 + 2 * n_extras,
        4 + 9 + 2 * items.len() + 7 * n_extras,
    );
    inv.arg(caller.stream())
        .arg(&keys.index)
        .arg(&keys.events)
        .arg(&keys.held);
    for (_, it) in extras() {
        inv.arg(keys.job(it.job_id))
            .arg(keys.checkpoints(it.job_id));
    }
    inv.arg(GROUP)
        .arg(caller.consumer)
        .arg(call.now_ms)
        .arg(retention.ms)
        .arg(if call.completed_event {
            caller.events_maxlen
        } else {
            0
        })
        .arg(if retention.keep_all { "1" } else { "0" })
        .arg(items.len())
        .arg(LAZY_WINDOW_MS)
        .arg(if call.xackdel { "1" } else { "0" });
    for &i in &order {
        inv.arg(items[i].delivery.entry_id)
            .arg(items[i].delivery.token);
    }
    for (pos, it) in extras() {
        inv.arg(pos)
            .arg(it.job_id)
            .arg(it.attempt)
            .arg(it.result)
            .arg(if it.touched { "1" } else { "0" });
    }
    let v: Value = inv.query(con).await?;
    // Every delivery completed: the count alone.
    if let Value::Int(n) = v {
        if n as usize == items.len() {
            return Ok(vec![true; items.len()]);
        }
        return Err(reply::protocol(
            "ack.lua",
            format!("{n} completed of {}", items.len()),
        ));
    }
    let sorted = codes(&v, "ack.lua", items.len())?;
    let mut out = vec![false; items.len()];
    for (pos, &i) in order.iter().enumerate() {
        out[i] = sorted[pos] == 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_numerically() {
        let mut ids = vec!["10-0", "9-1", "9-0", "x"];
        ids.sort_by_key(|i| id_key(i));
        assert_eq!(ids, vec!["9-0", "9-1", "10-0", "x"]);
    }
}
