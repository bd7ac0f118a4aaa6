//! Per-key limits and fair share (SPEC §6h): a rate and/or a concurrency cap for each value of a job header (a
//! tenant, an API account), across all workers, with keys that have a backlog taking turns.

use std::time::Duration;

use super::Queue;
use crate::error::{Error, Result};

/// Limits that apply to each key of a queue: the value of the job header [`KeyLimit::field`] names (set with
/// [`crate::Enqueue::header`]). Jobs without that header are not limited by key.
///
/// A job whose key has no room when a worker reads it is *held*: set aside, still waiting, while jobs of other
/// keys go ahead. Keys with held jobs take turns (one job per key per turn, the key served longest ago first), so
/// one key's backlog cannot starve the others.
///
/// ```
/// use std::time::Duration;
/// // Each tenant: at most 2 jobs at once and 10 starts per second.
/// let per_tenant = rill::KeyLimit::new("x-tenant").concurrency(2).rate(10, Duration::from_secs(1));
/// assert_eq!(per_tenant.field(), "x-tenant");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct KeyLimit {
    field: String,
    rate: Option<(u32, Duration)>,
    concurrency: Option<u32>,
}

impl KeyLimit {
    /// Limits keyed by the header `field` (an `x-*` name, as [`crate::Enqueue::header`] takes).
    pub fn new(field: impl Into<String>) -> Self {
        KeyLimit {
            field: field.into(),
            rate: None,
            concurrency: None,
        }
    }

    /// At most `max` starts per key in any window of `per`.
    pub fn rate(mut self, max: u32, per: Duration) -> Self {
        self.rate = Some((max, per));
        self
    }

    /// At most `max` jobs of one key handed out and not finished at once.
    pub fn concurrency(mut self, max: u32) -> Self {
        self.concurrency = Some(max);
        self
    }

    /// The header whose value is a job's key.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rate per key, if any: most starts and the window.
    pub fn max_rate(&self) -> Option<(u32, Duration)> {
        self.rate
    }

    /// The concurrency per key, if any.
    pub fn max_concurrency(&self) -> Option<u32> {
        self.concurrency
    }

    fn check(&self) -> Result<()> {
        let invalid = |reason| {
            Err(Error::InvalidOption {
                option: "key limit",
                reason,
            })
        };
        if let Some(reason) = super::enqueue::header_name_problem(&self.field) {
            return invalid(reason);
        }
        match (self.rate, self.concurrency) {
            (None, None) => invalid("needs a rate, a concurrency or both"),
            (Some((max, per)), _) if max == 0 || per < Duration::from_millis(1) => {
                invalid("a rate needs at least 1 job per at least 1 ms")
            }
            (_, Some(0)) => invalid("a concurrency needs at least 1 job"),
            _ => Ok(()),
        }
    }
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Queue<T> {
    /// Limits each key of the queue (see [`KeyLimit`]), across all its workers. Replaces any earlier per-key
    /// limits; the queue's own rate and concurrency limits stay and apply as well. Workers follow within about a
    /// second, and read without prefetch while the queue has per-key limits (a job is counted when handed out).
    ///
    /// ```no_run
    /// # async fn f(queue: rill::Queue<String>) -> rill::Result<()> {
    /// queue.set_key_limit(&rill::KeyLimit::new("x-tenant").concurrency(2)).await?;
    /// queue.enqueue_with(&"report".to_string(), rill::Enqueue::new().header("x-tenant", "acme")).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a field that is not an `x-*` header name, no rate and no concurrency, a rate
    /// of 0 or per under 1 ms, or a concurrency of 0; Redis errors.
    pub async fn set_key_limit(&self, limit: &KeyLimit) -> Result<()> {
        self.refuse_partitioned("per-key limits").await?;
        limit.check()?;
        let mut set = redis::cmd("HSET");
        set.arg(&self.keys.limit).arg("key_field").arg(&limit.field);
        let mut unset = redis::cmd("HDEL");
        unset.arg(&self.keys.limit);
        match limit.rate {
            Some((max, per)) => {
                set.arg("key_rate")
                    .arg(max)
                    .arg("key_period_ms")
                    .arg(per.as_millis() as u64);
            }
            None => {
                unset.arg("key_rate").arg("key_period_ms");
            }
        }
        match limit.concurrency {
            Some(max) => {
                set.arg("key_concurrency").arg(max);
            }
            None => {
                unset.arg("key_concurrency");
            }
        }
        let mut pipe = redis::pipe();
        pipe.atomic().add_command(set).ignore();
        if limit.rate.is_none() || limit.concurrency.is_none() {
            pipe.add_command(unset).ignore();
        }
        let () = pipe.query_async(&mut self.client.conn().await?).await?;
        Ok(())
    }

    /// The queue's per-key limits, if it has them.
    ///
    /// # Errors
    /// Redis errors; [`Error::Protocol`] for stored values that are not numbers.
    pub async fn key_limit(&self) -> Result<Option<KeyLimit>> {
        let (field, rate, period, cap): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = redis::cmd("HMGET")
            .arg(&self.keys.limit)
            .arg("key_field")
            .arg("key_rate")
            .arg("key_period_ms")
            .arg("key_concurrency")
            .query_async(&mut self.client.conn().await?)
            .await?;
        let Some(field) = field else { return Ok(None) };
        let number = |name: &str, v: String| {
            v.parse::<u64>().map_err(|_| Error::Protocol {
                what: "limit hash",
                detail: format!("{name} {v:?} is not a number"),
            })
        };
        let rate = match (rate, period) {
            (Some(r), Some(p)) => Some((
                number("key_rate", r)?.try_into().unwrap_or(u32::MAX),
                Duration::from_millis(number("key_period_ms", p)?),
            )),
            _ => None,
        };
        let concurrency = match cap {
            Some(c) => Some(number("key_concurrency", c)?.try_into().unwrap_or(u32::MAX)),
            None => None,
        };
        Ok(Some(KeyLimit {
            field,
            rate,
            concurrency,
        }))
    }

    /// Removes the queue's per-key limits. Jobs held back under them are then handed out in turn, unlimited by
    /// key. Returns whether the queue had them.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn clear_key_limit(&self) -> Result<bool> {
        let removed: u64 = redis::cmd("HDEL")
            .arg(&self.keys.limit)
            .arg("key_field")
            .arg("key_rate")
            .arg("key_period_ms")
            .arg("key_concurrency")
            .query_async(&mut self.client.conn().await?)
            .await?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        let ok = KeyLimit::new("x-tenant").concurrency(1);
        assert!(ok.check().is_ok());
        assert!(KeyLimit::new("tenant").concurrency(1).check().is_err());
        assert!(KeyLimit::new("x-tenant").check().is_err());
        assert!(KeyLimit::new("x-tenant").concurrency(0).check().is_err());
        assert!(
            KeyLimit::new("x-tenant")
                .rate(0, Duration::from_secs(1))
                .check()
                .is_err()
        );
        assert!(
            KeyLimit::new("x-tenant")
                .rate(5, Duration::from_micros(10))
                .check()
                .is_err()
        );
        let both = KeyLimit::new("x-a")
            .rate(5, Duration::from_secs(2))
            .concurrency(3);
        assert_eq!(both.max_rate(), Some((5, Duration::from_secs(2))));
        assert_eq!(both.max_concurrency(), Some(3));
    }
}
