//! Who and when, as this process signs what it writes: the local clock, the Redis server's clock, the host
//! name, random job ids, and the names workers and signal senders go by. Every module that stamps a write
//! takes these from here, so a worker never depends on the producer just to read a clock.

use std::time::SystemTime;

use crate::error::Result;

/// Milliseconds since the Unix epoch, from the local clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The Redis server's clock, ms since the Unix epoch (heartbeats are stamped with it, so clock skew between
/// hosts cannot make a live worker look crashed).
pub(crate) async fn server_ms<C: redis::aio::ConnectionLike + Send>(conn: &mut C) -> Result<u64> {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(s * 1000 + us / 1000)
}

/// A random 128-bit job id in hex (for jobs that are not simply their first entry).
pub(crate) fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// This machine's host name, trimmed; `host` when it cannot be read.
pub(crate) fn hostname() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() { "host".into() } else { host }
}

/// A consumer name unique to this worker: host (restricted to key-safe characters), pid and a random suffix.
pub(crate) fn consumer_name() -> String {
    format!(
        "{}-{}-{:08x}",
        key_safe(&hostname()),
        std::process::id(),
        rand::random::<u32>()
    )
}

/// At most 64 characters of `s`, with any character outside `[A-Za-z0-9.-]` replaced by `_`.
fn key_safe(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    s.chars()
        .map(|c| if safe(c) { c } else { '_' })
        .take(64)
        .collect()
}

/// The name this process signs its signals with: host and pid.
pub fn sender_name() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_made_key_safe() {
        assert_eq!(key_safe("web-1.example"), "web-1.example");
        assert_eq!(key_safe("my host{x}:ü"), "my_host_x___");
        assert_eq!(key_safe(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn random_ids_are_hex_and_distinct() {
        let a = random_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_id());
    }

    #[test]
    fn consumer_names_are_unique_and_key_safe() {
        let a = consumer_name();
        assert_ne!(a, consumer_name());
        assert!(!a.contains(char::is_whitespace));
        assert!(!hostname().is_empty());
        assert!(sender_name().ends_with(&format!("-{}", std::process::id())));
    }
}
