//! Partitioned queues (SPEC §2a): one logical queue spread over N key sets, each with a hash tag of its own, so a
//! queue can use every shard of a Redis Cluster. Partition 0 is the queue's own key set (`{<queue>}`): it holds
//! what belongs to the whole queue (settings, signals, the worker registry, schedules); partitions 1 to N-1 have
//! tags chosen, once, when the queue is partitioned, so their slots are spread evenly over the slot space from
//! partition 0's, and are stored in the queue's settings (`<P>:config`), so every producer and worker agrees.
//!
//! A job goes to partition `fnv1a32(routing key) mod N`, where the routing key is its dedup key if it has one, its
//! job id otherwise (so a dedup check stays atomic in one partition); a producer gives a job without an id of its
//! own a generated one (`~<ms>.<hex>`) that routes to the next partition in turn, so id-less jobs spread evenly
//! and can still be found by id.

use crate::error::{Error, Result};
use crate::keys::validate_name;

/// Most partitions a queue may have.
pub const MAX_PARTITIONS: usize = 256;

/// Redis Cluster hash slots.
const SLOTS: u32 = 16384;

/// A partitioned queue's partitions: their hash tags, partition 0 first (the queue's own name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    tags: Vec<String>,
}

impl Partitions {
    /// Chooses the tags of `n` partitions of `queue`: partition `i` ≥ 1 gets the first of `<queue>~<i>`,
    /// `<queue>~<i>.1`, `<queue>~<i>.2`, ... whose slot is `(slot(<queue>) + i × 16384 / n) mod 16384`, so the
    /// partitions sit evenly spaced around the slot space, and a cluster whose masters own equal slot ranges
    /// (what `redis-cli --cluster create` makes) gives each master its share.
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::InvalidOption`] unless `2 ≤ n ≤` [`MAX_PARTITIONS`].
    pub fn plan(queue: &str, n: usize) -> Result<Self> {
        validate_name(queue)?;
        if !(2..=MAX_PARTITIONS).contains(&n) {
            return Err(Error::InvalidOption {
                option: "partitions",
                reason: "must be 2 to 256",
            });
        }
        let home = u32::from(slot(queue));
        let mut tags = vec![queue.to_owned()];
        for i in 1..n {
            let target = ((home + i as u32 * SLOTS / n as u32) % SLOTS) as u16;
            let tag = (0u64..)
                .map(|k| match k {
                    0 => format!("{queue}~{i}"),
                    k => format!("{queue}~{i}.{k}"),
                })
                .find(|t| slot(t) == target)
                .expect("every slot is reached");
            tags.push(tag);
        }
        Ok(Partitions { tags })
    }

    /// The partitions stored in a queue's settings (`partitions`, `partition_tags` of `<P>:config`); `None` for a
    /// queue that is not partitioned.
    ///
    /// # Errors
    /// [`Error::Protocol`] when the fields are there but do not describe partitions of `queue`.
    pub fn from_config(
        queue: &str,
        count: Option<&str>,
        tags: Option<&str>,
    ) -> Result<Option<Self>> {
        let Some(count) = count else { return Ok(None) };
        let bad = |why: &str| Error::Protocol {
            what: "the queue's partitions (<P>:config)",
            detail: why.to_owned(),
        };
        let n: usize = count
            .parse()
            .map_err(|_| bad("`partitions` is not a number"))?;
        if n <= 1 {
            return Ok(None);
        }
        let tags: Vec<String> = tags
            .unwrap_or_default()
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if tags.len() != n || n > MAX_PARTITIONS {
            return Err(bad("`partition_tags` does not list `partitions` tags"));
        }
        for (i, tag) in tags.iter().enumerate() {
            if !is_tag_of(queue, i, tag) {
                return Err(bad(&format!("`{tag}` is not a tag of partition {i}")));
            }
        }
        Ok(Some(Partitions { tags }))
    }

    /// How many partitions.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Always false: a partitioned queue has at least two.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The hash tags, partition 0 (the queue's name) first.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// `partition_tags` as stored: the tags separated by single spaces.
    pub fn tag_list(&self) -> String {
        self.tags.join(" ")
    }

    /// The partition of a job whose routing key (dedup key, else job id) is `key`.
    pub fn of_key(&self, key: &str) -> usize {
        (fnv1a32(key.as_bytes()) % self.tags.len() as u32) as usize
    }

    /// A generated job id that routes to `partition`: `~<now, ms>.<16 random hex digits>`. The `~` tells the
    /// scripts it was not chosen by the caller (its job keeps no record unless it has a result, SPEC §2a), and the
    /// time bounds the look for its completion among the queue's events.
    pub fn id_in(&self, partition: usize, now_ms: u64) -> String {
        loop {
            let id = format!("~{now_ms}.{:016x}", rand::random::<u64>());
            if self.of_key(&id) == partition % self.tags.len() {
                return id;
            }
        }
    }
}

/// Whether `tag` is a valid tag for partition `i` of `queue` (the forms [`Partitions::plan`] makes).
fn is_tag_of(queue: &str, i: usize, tag: &str) -> bool {
    if i == 0 {
        return tag == queue;
    }
    let Some(rest) = tag.strip_prefix(queue).and_then(|r| r.strip_prefix('~')) else {
        return false;
    };
    let (index, k) = rest.split_once('.').unwrap_or((rest, "1"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(index) && digits(k) && index.parse() == Ok(i)
}

/// The Redis Cluster slot of hash tag `tag` (CRC16/XMODEM mod 16384).
pub fn slot(tag: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % SLOTS as u16
}

/// 32-bit FNV-1a (offset basis 2166136261, prime 16777619): the routing hash, a few lines in any language.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn slots_match_redis() {
        // CLUSTER KEYSLOT answers, from a Redis server.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
        assert_eq!(slot("123456789"), 0x31c3);
    }

    #[test]
    fn partitions_are_spread_evenly_from_the_queue_slot() {
        for n in [2usize, 3, 6, 16, 256] {
            let p = Partitions::plan("orders", n).unwrap();
            assert_eq!(p.len(), n);
            assert_eq!(p.tags()[0], "orders");
            let home = u32::from(slot("orders"));
            for (i, tag) in p.tags().iter().enumerate() {
                let want = (home + i as u32 * 16384 / n as u32) % 16384;
                assert_eq!(u32::from(slot(tag)), want, "{tag}");
                assert!(is_tag_of("orders", i, tag), "{tag}");
            }
            let stored =
                Partitions::from_config("orders", Some(&n.to_string()), Some(&p.tag_list()));
            assert_eq!(stored.unwrap(), Some(p));
        }
        assert!(Partitions::plan("orders", 1).is_err());
        assert!(Partitions::plan("orders", 257).is_err());
        assert!(Partitions::plan("bad name", 2).is_err());
    }

    #[test]
    fn stored_partitions_are_checked() {
        let ok = |c, t| Partitions::from_config("q", c, t);
        assert_eq!(ok(None, None).unwrap(), None);
        assert_eq!(ok(Some("1"), None).unwrap(), None);
        assert!(ok(Some("x"), None).is_err());
        assert!(ok(Some("2"), Some("q")).is_err());
        assert!(ok(Some("2"), Some("q q~2")).is_err());
        assert!(ok(Some("2"), Some("q other~1")).is_err());
        assert!(ok(Some("2"), Some("q q~1.x")).is_err());
        assert!(ok(Some("2"), Some("q q~1.77")).unwrap().is_some());
        assert!(ok(Some("2"), Some("p q~1")).is_err());
    }

    #[test]
    fn routing_is_by_key_and_generated_ids_land_where_asked() {
        let p = Partitions::plan("q", 6).unwrap();
        let mut seen = [0usize; 6];
        for i in 0..600 {
            let id = p.id_in(i, 1_700_000_000_000);
            assert_eq!(p.of_key(&id), i % 6);
            assert!(id.starts_with("~1700000000000.") && id.len() == 31, "{id}");
            seen[p.of_key(&format!("key-{i}"))] += 1;
        }
        // FNV spreads sequential keys over every partition.
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
