//! Schedules: jobs enqueued by cron expressions (in an IANA time zone, DST included) or at a fixed interval,
//! stored in Redis (SPEC.md §6e) and fired by whichever workers of the queue run. A worker's promoter learns
//! the earliest fire time from `promote.lua`, computes the due fire times and the next one from the definition
//! (`plan`), and calls `fire.lua`, which enqueues them only if the schedule still waits for that time: exactly
//! once per fire time however many workers try, and never before the Redis server's clock says so.

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeZone;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};
use crate::identity::now_ms;
use crate::queue::Queue;
use crate::wire;

/// How late a fire time may be run and still count as on time (a worker woke late, Redis was away briefly).
pub const ON_TIME: Duration = Duration::from_secs(60);

/// Most fire times looked at when catching up after a long gap (a cron that fired every minute, missed for
/// weeks): the policy then applies to the newest of them.
const MAX_CATCH_UP: usize = 10_000;

/// What to do with fire times that passed while no worker ran (more than [`ON_TIME`] ago).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missed {
    /// Run none of them; go on with the next fire time.
    Skip,
    /// Run one job for all of them (carrying the newest missed fire time); the default.
    #[default]
    Once,
    /// Run each of them, at most this many (the newest).
    All(u32),
}

impl Missed {
    fn as_fields(self) -> (&'static str, u32) {
        match self {
            Missed::Skip => ("skip", 0),
            Missed::Once => ("once", 1),
            Missed::All(n) => ("all", n),
        }
    }

    fn from_fields(name: &str, max: u32) -> Option<Self> {
        Some(match name {
            "skip" => Missed::Skip,
            "once" => Missed::Once,
            "all" => Missed::All(max),
            _ => return None,
        })
    }
}

/// When a schedule fires: a cron expression (five fields, or six with seconds first; `@daily` and the like) in a
/// time zone, or a fixed interval.
///
/// ```
/// use std::time::Duration;
/// let nightly = rill::Schedule::cron("0 3 * * *").tz("Europe/Berlin");
/// let often = rill::Schedule::every(Duration::from_secs(30)).missed(rill::Missed::Skip);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Schedule {
    rule: Rule,
    missed: Missed,
    priority: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Cron { expr: String, tz: String },
    Every(Duration),
}

impl Schedule {
    /// Fires at the times cron expression `expr` matches, in UTC unless [`Schedule::tz`] says otherwise.
    pub fn cron(expr: impl Into<String>) -> Self {
        Schedule {
            rule: Rule::Cron {
                expr: expr.into(),
                tz: "UTC".into(),
            },
            missed: Missed::default(),
            priority: 0,
        }
    }

    /// Fires every `interval` (at least a second), first one interval after it is added.
    pub fn every(interval: Duration) -> Self {
        Schedule {
            rule: Rule::Every(interval),
            missed: Missed::default(),
            priority: 0,
        }
    }

    /// The IANA time zone a cron expression is read in (`Europe/Berlin`); ignored for intervals.
    pub fn tz(mut self, zone: impl Into<String>) -> Self {
        if let Rule::Cron { tz, .. } = &mut self.rule {
            *tz = zone.into();
        }
        self
    }

    /// What to do with fire times missed while no worker ran (default [`Missed::Once`]).
    pub fn missed(mut self, policy: Missed) -> Self {
        self.missed = policy;
        self
    }

    /// What it does with missed fire times.
    pub fn missed_policy(&self) -> Missed {
        self.missed
    }

    /// The priority level of the jobs it enqueues (default 0; see [`crate::Priorities`]). A level the queue does
    /// not have when it fires is read as its last one.
    pub fn priority(mut self, level: u8) -> Self {
        self.priority = level;
        self
    }

    /// The priority level of the jobs it enqueues.
    pub fn level(&self) -> u8 {
        self.priority
    }

    /// The schedule's fields in its hash (SPEC.md §6e), after checking it.
    fn fields(&self) -> Result<Vec<(&'static str, String)>> {
        self.check()?;
        let (missed, max) = self.missed.as_fields();
        let mut f = vec![
            ("missed", missed.to_owned()),
            ("missed_max", max.to_string()),
            ("priority", self.priority.to_string()),
        ];
        match &self.rule {
            Rule::Cron { expr, tz } => {
                f.extend([
                    ("kind", "cron".into()),
                    ("cron", expr.clone()),
                    ("tz", tz.clone()),
                ]);
            }
            Rule::Every(d) => f.extend([
                ("kind", "every".into()),
                ("every_ms", d.as_millis().to_string()),
            ]),
        }
        Ok(f)
    }

    fn check(&self) -> Result<()> {
        let bad = |reason| Error::InvalidOption {
            option: "schedule",
            reason,
        };
        match &self.rule {
            Rule::Cron { expr, tz } => {
                expr.parse::<croner::Cron>()
                    .map_err(|_| bad("not a cron expression croner reads"))?;
                tz.parse::<chrono_tz::Tz>()
                    .map_err(|_| bad("not an IANA time zone name"))?;
            }
            Rule::Every(d) if *d < Duration::from_secs(1) => {
                return Err(bad("an interval must be at least 1 s"));
            }
            Rule::Every(_) => {}
        }
        if self.missed == Missed::All(0) {
            return Err(bad("Missed::All needs at least 1"));
        }
        if self.priority >= crate::priority::MAX_LEVELS {
            return Err(bad("priority levels are 0 to 15"));
        }
        Ok(())
    }

    /// Reads a schedule back from its hash fields.
    fn from_fields(f: &HashMap<String, String>) -> Option<Self> {
        let rule = match f.get("kind")?.as_str() {
            "cron" => Rule::Cron {
                expr: f.get("cron")?.clone(),
                tz: f.get("tz").cloned().unwrap_or_else(|| "UTC".into()),
            },
            "every" => Rule::Every(Duration::from_millis(f.get("every_ms")?.parse().ok()?)),
            _ => return None,
        };
        let max = f
            .get("missed_max")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1);
        let missed = Missed::from_fields(f.get("missed").map_or("once", |m| m.as_str()), max)?;
        let priority = f.get("priority").and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Schedule {
            rule,
            missed,
            priority,
        })
    }

    /// The first fire time after `after_ms` (ms since the Unix epoch; `None`: it never fires again). Every rill
    /// client computes the same times (SPEC.md §6e).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match &self.rule {
            Rule::Every(d) => Some(after_ms.saturating_add(d.as_millis() as u64)),
            Rule::Cron { expr, tz } => {
                let cron: croner::Cron = expr.parse().ok()?;
                let tz: chrono_tz::Tz = tz.parse().ok()?;
                let mut from = tz.timestamp_millis_opt(after_ms as i64).single()?;
                // croner searches wall-clock time: from inside the second pass of a repeated hour it can answer
                // that hour's first pass, which is earlier; go on from there (at most a repeated hour's matches).
                for _ in 0..100_000 {
                    let next = cron.find_next_occurrence(&from, false).ok()?;
                    let ms = u64::try_from(next.timestamp_millis()).ok()?;
                    if ms > after_ms {
                        return Some(ms);
                    }
                    from = next;
                }
                None
            }
        }
    }

    /// What a worker firing at `now_ms` does with next fire time `t_ms`: see [`plan`].
    pub(crate) fn plan(&self, t_ms: u64, now_ms: u64) -> Plan {
        plan(self, t_ms, now_ms)
    }

    /// How the schedule reads in a listing: `cron 0 3 * * * Europe/Berlin` or `every 30s`.
    pub fn describe(&self) -> String {
        match &self.rule {
            Rule::Cron { expr, tz } => format!("cron {expr} {tz}"),
            Rule::Every(d) => format!("every {d:?}"),
        }
    }
}

/// The fire times to enqueue now and the next fire time after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) fires: Vec<u64>,
    pub(crate) next: u64,
}

/// Every fire time from `t_ms` up to `now_ms` is due. One due time, on time ([`ON_TIME`]), fires; otherwise they
/// were missed and the schedule's [`Missed`] policy picks which to run. The next fire time is the first after
/// `now_ms` (`u64::MAX`, never, if the expression matches no later time).
fn plan(s: &Schedule, t_ms: u64, now_ms: u64) -> Plan {
    let mut due = vec![t_ms];
    let mut next = s.next_after(t_ms).unwrap_or(u64::MAX);
    if let Rule::Every(d) = &s.rule {
        // Arithmetic, however long the gap.
        let step = (d.as_millis() as u64).max(1);
        let behind = now_ms.saturating_sub(t_ms) / step;
        let keep = behind.min(MAX_CATCH_UP as u64 - 1);
        due = ((behind - keep)..=behind)
            .map(|k| t_ms + k * step)
            .collect();
        next = t_ms.saturating_add((behind + 1).saturating_mul(step));
    } else {
        while next <= now_ms {
            due.push(next);
            if due.len() > MAX_CATCH_UP {
                due.remove(0);
            }
            next = s.next_after(next).unwrap_or(u64::MAX);
        }
    }
    let newest = *due.last().expect("t is due");
    let on_time = |f: u64| now_ms.saturating_sub(f) <= ON_TIME.as_millis() as u64;
    let fires = if due.len() == 1 && on_time(newest) {
        due
    } else {
        match s.missed {
            Missed::Skip => on_time(newest).then_some(newest).into_iter().collect(),
            Missed::Once => vec![newest],
            Missed::All(n) => {
                let from = due.len().saturating_sub(n as usize);
                due[from..].to_vec()
            }
        }
    };
    Plan { fires, next }
}

/// The definition of schedule `name` of the queue with `keys`, if it exists and reads well.
pub(crate) async fn definition<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &crate::keys::QueueKeys,
    name: &str,
) -> Result<Option<Schedule>> {
    let fields: HashMap<String, String> = redis::cmd("HMGET")
        .arg(keys.schedule(name))
        .arg(&["kind", "cron", "tz", "every_ms", "missed", "missed_max"])
        .query_async::<Vec<Option<String>>>(conn)
        .await?
        .into_iter()
        .zip(["kind", "cron", "tz", "every_ms", "missed", "missed_max"])
        .filter_map(|(v, k)| v.map(|v| (k.to_owned(), v)))
        .collect();
    Ok(Schedule::from_fields(&fields))
}

/// One schedule as stored: its definition, state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// Its name (unique in the queue).
    pub name: String,
    /// When it fires.
    pub schedule: Schedule,
    /// The job data each fire enqueues (CBOR).
    pub payload: Vec<u8>,
    /// Paused: it fires nothing until resumed.
    pub paused: bool,
    /// Next fire time, ms since the Unix epoch (`None` while paused, or if it never fires again).
    pub next_ms: Option<u64>,
    /// The last fire time it enqueued a job for, ms.
    pub last_fire_ms: Option<u64>,
    /// Jobs it has enqueued.
    pub fired: u64,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Adds schedule `name`, or replaces its definition and data (its counters stay; a paused schedule stays
    /// paused). Each fire enqueues `data` as a plain job carrying headers `x-schedule` (the name) and
    /// `x-fire-ms` (the fire time; see [`crate::Job::schedule`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidOption`] (an expression, zone or interval that cannot work),
    /// [`Error::PayloadTooLarge`], encode or Redis errors.
    ///
    /// ```no_run
    /// # async fn demo(q: rill::Queue<String>) -> rill::Result<()> {
    /// let nightly = rill::Schedule::cron("0 3 * * *").tz("Europe/Berlin");
    /// q.schedule("nightly-report", nightly, &"full".to_owned()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn schedule(&self, name: &str, schedule: Schedule, data: &T) -> Result<ScheduleInfo> {
        crate::keys::validate_name(name)?;
        let fields = schedule.fields()?;
        let payload = wire::encode_within(data, self.client.config().max_payload_bytes)?;
        let now = now_ms();
        let next = schedule.next_after(now).ok_or(Error::InvalidOption {
            option: "schedule",
            reason: "it never fires after now",
        })?;
        let key = self.keys.schedule(name);
        let mut conn = self.client.conn().await?;
        let paused: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("paused")
            .query_async(&mut conn)
            .await?;
        let paused = paused.as_deref() == Some("1");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("payload")
            .arg(&payload)
            .arg("next_ms")
            .arg(next)
            .arg("updated_ms")
            .arg(now)
            .arg(&fields)
            .ignore()
            .cmd("HSETNX")
            .arg(&key)
            .arg("created_ms")
            .arg(now)
            .ignore()
            .cmd("ZADD")
            .arg(&self.keys.schedules)
            .arg(if paused {
                "+inf".to_owned()
            } else {
                next.to_string()
            })
            .arg(name)
            .ignore();
        let () = pipe.query_async(&mut conn).await?;
        self.client.list_queue(&mut conn, &self.keys).await?;
        self.schedule_info(name)
            .await?
            .ok_or_else(|| Error::Protocol {
                what: "HGETALL",
                detail: format!("schedule {name} vanished as it was written"),
            })
    }

    /// Every schedule of this queue, by name.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>> {
        let mut conn = self.client.conn().await?;
        let names: Vec<String> = redis::cmd("ZRANGE")
            .arg(&self.keys.schedules)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        for name in names {
            if let Some(info) = self.schedule_info(&name).await? {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Schedule `name`, if it exists.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn schedule_info(&self, name: &str) -> Result<Option<ScheduleInfo>> {
        let mut conn = self.client.conn().await?;
        let raw: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.keys.schedule(name))
            .query_async(&mut conn)
            .await?;
        let text: HashMap<String, String> = raw
            .iter()
            .filter(|(k, _)| k.as_str() != "payload")
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let Some(schedule) = Schedule::from_fields(&text) else {
            return Ok(None);
        };
        let num = |k: &str| text.get(k).and_then(|v| v.parse::<u64>().ok());
        let paused = text.get("paused").is_some_and(|p| p == "1");
        Ok(Some(ScheduleInfo {
            name: name.to_owned(),
            schedule,
            payload: raw.get("payload").cloned().unwrap_or_default(),
            paused,
            next_ms: num("next_ms").filter(|n| !paused && *n != u64::MAX),
            last_fire_ms: num("last_fire_ms"),
            fired: num("fired").unwrap_or(0),
        }))
    }

    /// Pauses schedule `name` (it fires nothing until resumed). Returns whether it exists.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn pause_schedule(&self, name: &str) -> Result<bool> {
        self.set_state(name, &[("paused", "1".into())], "+inf".into())
            .await
    }

    /// Resumes schedule `name` from its next fire time after now (times passed while paused are not run).
    /// Returns whether it exists.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn resume_schedule(&self, name: &str) -> Result<bool> {
        let Some(info) = self.schedule_info(name).await? else {
            return Ok(false);
        };
        let next = info.schedule.next_after(now_ms()).unwrap_or(u64::MAX);
        let fields = [("paused", "0".to_owned()), ("next_ms", next.to_string())];
        self.set_state(name, &fields, next.to_string()).await
    }

    /// Sets `fields` in schedule `name`'s hash and its score in the schedules set, together, if the schedule still
    /// exists when they land: a `WATCH`ed transaction on a connection of its own (a schedule removed meanwhile
    /// must not come back as a stray member and half a hash). Returns whether it existed.
    async fn set_state(
        &self,
        name: &str,
        fields: &[(&str, String)],
        score: String,
    ) -> Result<bool> {
        let key = self.keys.schedule(name);
        let mut conn = self.client.blocking_conn(Duration::ZERO).await?;
        loop {
            let () = redis::cmd("WATCH").arg(&key).query_async(&mut conn).await?;
            let exists: bool = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await?;
            if !exists {
                let () = redis::cmd("UNWATCH").query_async(&mut conn).await?;
                return Ok(false);
            }
            let done: Option<()> = redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg(fields)
                .ignore()
                .cmd("ZADD")
                .arg(&self.keys.schedules)
                .arg(&score)
                .arg(name)
                .ignore()
                .query_async(&mut conn)
                .await?;
            if done.is_some() {
                return Ok(true);
            }
            // The hash changed between WATCH and EXEC (fired, updated or removed): look again.
        }
    }

    /// Removes schedule `name` (jobs it enqueued stay). Returns whether it existed.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn remove_schedule(&self, name: &str) -> Result<bool> {
        let mut conn = self.client.conn().await?;
        let (removed, _): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("ZREM")
            .arg(&self.keys.schedules)
            .arg(name)
            .cmd("DEL")
            .arg(self.keys.schedule(name))
            .query_async(&mut conn)
            .await?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests;
