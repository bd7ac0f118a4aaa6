//! The harness: a queue under test, its reference model, and the checks that compare them.

use super::*;

impl Harness {
    pub(super) async fn new(conn: support::AConn, limits: Limits, levels: u8) -> Self {
        let keys = QueueKeys::new(&support::namespace(), "model").unwrap();
        let mut conn = conn;
        support::create_group(&mut conn, &keys).await;
        scripts::set_levels(&mut conn, &keys, &rill::Priorities::strict(levels).unwrap())
            .await
            .unwrap();
        if let Some(cap) = limits.cap {
            let _: () = conn.hset(&keys.limit, "concurrency", cap).await.unwrap();
        }
        if let Some(per_key) = limits.per_key {
            let _: () = conn
                .hset_multiple(
                    &keys.limit,
                    &[
                        ("key_field", "x-t".to_owned()),
                        ("key_concurrency", per_key.to_string()),
                    ],
                )
                .await
                .unwrap();
        }
        if let Some(rate) = limits.rate {
            let _: () = conn
                .hset_multiple(
                    &keys.limit,
                    &[("rate", u64::from(rate)), ("period_ms", 3_600_000)],
                )
                .await
                .unwrap();
        }
        Harness {
            limits,
            levels,
            conn,
            keys,
            model: Model {
                jobs: BTreeMap::new(),
                dedup: HashMap::new(),
                consumers: (0..WORKERS).map(|w| format!("w{w}-0")).collect(),
                held: vec![Vec::new(); WORKERS],
                generation: 0,
                now: 1_000_000,
                delayed_ids: 0,
            },
        }
    }

    pub(super) async fn index(&mut self, job: &str) -> String {
        self.conn.hget(&self.keys.index, job).await.unwrap()
    }

    pub(super) fn pick(&self, worker: usize, pick: usize) -> Option<Held> {
        let h = &self.model.held[worker];
        (!h.is_empty()).then(|| h[pick % h.len()].clone())
    }

    /// Whether this delivery is the job's current one.
    pub(super) fn current(&self, h: &Held, consumer: &str) -> bool {
        matches!(&self.model.jobs[&h.job].state,
            State::Active { consumer: c, token, .. } if c == consumer && *token == h.token && self.model.jobs[&h.job].entry == h.entry)
    }

    pub(super) fn drop_held(&mut self, worker: usize, h: &Held) {
        self.model.held[worker]
            .retain(|x| !(x.entry == h.entry && x.token == h.token && x.level == h.level));
    }

    /// Reads up to `count` new entries for `consumer`: with `XREADGROUP` without limits; through `limit.lua`
    /// with them, which must read exactly as many as the room the model leaves (and the waiting jobs) allow.
    /// Returns the count the model allows and the entry ids read.
    pub(super) async fn read(&mut self, consumer: &str, count: u8) -> (u8, Vec<(u8, String)>) {
        if self.limits.cap.is_none() && self.limits.rate.is_none() && !self.limits.keyed {
            return (count, self.read_plain(consumer, count).await);
        }
        let active = self
            .model
            .jobs
            .values()
            .filter(|j| matches!(j.state, State::Active { .. }))
            .count() as u64;
        // What may start: every waiting job, or under per-key limits, each tenant's waiting ones up to its room.
        let waiting = match self.limits.per_key {
            None => self
                .model
                .jobs
                .values()
                .filter(|j| j.state == State::Waiting)
                .count() as u64,
            Some(per_key) => (0..=3u8)
                .map(|t| {
                    let of = |s: fn(&State) -> bool| {
                        self.model
                            .jobs
                            .values()
                            .filter(|j| j.tenant == t && s(&j.state))
                            .count() as u64
                    };
                    let waiting = of(|s| *s == State::Waiting);
                    let active = of(|s| matches!(s, State::Active { .. }));
                    if t == 3 {
                        waiting
                    } else {
                        assert!(
                            active <= u64::from(per_key),
                            "tenant {t}: {active} active over {per_key}"
                        );
                        waiting.min(u64::from(per_key).saturating_sub(active))
                    }
                })
                .sum(),
        };
        let mut room = u64::from(count);
        let mut why = "";
        if let Some(rate) = self.limits.rate {
            let left = u64::from(rate).saturating_sub(self.limits.started);
            if left == 0 {
                why = "rate";
            }
            room = room.min(left);
        }
        if let Some(cap) = self.limits.cap {
            assert!(
                active <= u64::from(cap),
                "{active} active over the limit of {cap}"
            );
            let left = u64::from(cap) - active;
            if left == 0 && why.is_empty() {
                why = "room";
            }
            room = room.min(left);
        }
        let streams: Vec<&str> = (0..self.levels).map(|l| self.keys.level(l)).collect();
        let r = scripts::read_limited(
            &mut self.conn,
            &self.keys,
            &streams,
            consumer,
            usize::from(count),
        )
        .await
        .unwrap();
        let got: Vec<(u8, String)> = match r {
            LimitedRead::Entries(e) => e.into_iter().map(|(at, e)| (at as u8, e.id)).collect(),
            LimitedRead::Rate(_) => {
                assert_eq!(why, "rate", "refused for the rate");
                Vec::new()
            }
            LimitedRead::Room { .. } => {
                assert_eq!(why, "room", "refused for the room");
                Vec::new()
            }
            LimitedRead::Empty { .. } | LimitedRead::Keys { .. } => {
                assert!(
                    room > 0 && waiting == 0,
                    "nothing read though {waiting} may start and room is {room}"
                );
                Vec::new()
            }
            LimitedRead::Again => panic!("the scan budget ran out on a model this small"),
            // Limits lifted and nothing held any more: read as usual.
            LimitedRead::Unlimited if self.limits.per_key.is_none() => {
                return (count, self.read_plain(consumer, count).await);
            }
            LimitedRead::Unlimited => panic!("the limits were set"),
        };
        assert_eq!(
            got.len() as u64,
            room.min(waiting),
            "read what the model leaves room for"
        );
        (room as u8, got)
    }

    /// Reads as a worker does without limits: level by level (SPEC §6g).
    async fn read_plain(&mut self, consumer: &str, count: u8) -> Vec<(u8, String)> {
        {
            // Level by level, as a worker reads (SPEC §6g).
            let mut got = Vec::new();
            for level in 0..self.levels {
                let left = usize::from(count) - got.len();
                if left == 0 {
                    break;
                }
                let v: redis::Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(left)
                    .arg("STREAMS")
                    .arg(self.keys.level(level))
                    .arg(">")
                    .query_async(&mut self.conn)
                    .await
                    .unwrap();
                let read = rill::wire::parse_read_reply(v).unwrap();
                got.extend(read.into_iter().map(|e| (level, e.id)));
            }
            got
        }
    }

    /// Lifts the case's limits (for the final drain).
    pub(super) async fn lift_limits(&mut self) {
        let _: () = self.conn.del(&self.keys.limit).await.unwrap();
        // Jobs held under per-key limits still go through limit.lua until none is left.
        self.limits = Limits {
            keyed: self.limits.keyed,
            ..Limits::default()
        };
    }

    /// Every job the model holds is in Redis in the same state, and Redis holds nothing else.
    pub(super) async fn check(&mut self) {
        let mut counts = (0u64, 0u64, 0u64, 0u64);
        for (id, j) in &self.model.jobs {
            let scripts::StateRow {
                state,
                entry_id: entry,
                attempts: made,
                owner,
                deliveries,
                level,
                ..
            } = scripts::state(&mut self.conn, &self.keys, id)
                .await
                .unwrap();
            match &j.state {
                State::Waiting => {
                    assert_eq!(
                        (state.as_str(), entry.as_str(), level),
                        ("waiting", j.entry.as_str(), j.level),
                        "{id}"
                    );
                    counts.0 += 1;
                }
                State::Active {
                    consumer, token, ..
                } => {
                    assert_eq!(
                        (state.as_str(), owner.as_str(), deliveries, level),
                        ("active", consumer.as_str(), *token, j.level),
                        "{id}"
                    );
                    assert_eq!(
                        made + deliveries - 1,
                        u64::from(j.made),
                        "{id}: attempts made"
                    );
                    counts.1 += 1;
                }
                State::Delayed { .. } => {
                    let want = if j.made > 0 { "failed" } else { "delayed" };
                    assert_eq!((state.as_str(), made), (want, u64::from(j.made)), "{id}");
                    counts.2 += 1;
                }
                State::Completed => assert_eq!(state, "completed", "{id}"),
                State::Dead => {
                    assert_eq!(state, "dead", "{id}");
                    counts.3 += 1;
                }
            }
            assert!(j.made <= j.max, "{id}: attempts never exceed the maximum");
        }
        // Nothing extra: pending, lag, delayed and dead sizes match the model exactly, summed over the levels.
        let (mut waiting, mut pending) = (0, 0);
        for level in 0..self.levels {
            let stream = self.keys.level(level).to_owned();
            let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut self.conn)
                .await
                .unwrap();
            let int = |v: &redis::Value| match v {
                redis::Value::Int(n) => *n as u64,
                other => panic!("{other:?}"),
            };
            // Undelivered entries: everything after the group's last-delivered id (`lag` is nil after some
            // deletions).
            let last = match &groups[0]["last-delivered-id"] {
                redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("{other:?}"),
            };
            let after: redis::Value = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(format!("({last}"))
                .arg("+")
                .query_async(&mut self.conn)
                .await
                .unwrap();
            waiting += rill::wire::parse_entries(after).unwrap().len() as u64;
            pending += int(&groups[0]["pending"]);
        }
        // Jobs held back by per-key limits wait below the group's position (SPEC §6h).
        let held: u64 = self.conn.zcard(&self.keys.held).await.unwrap();
        assert_eq!(waiting + held, counts.0, "waiting entries");
        if let Some(per_key) = self.limits.per_key {
            for t in 0..3 {
                let active = self
                    .model
                    .jobs
                    .values()
                    .filter(|j| j.tenant == t && matches!(j.state, State::Active { .. }))
                    .count();
                assert!(
                    active <= usize::from(per_key),
                    "tenant {t}: {active} active"
                );
            }
        }
        assert_eq!(pending, counts.1, "pending entries");
        let delayed: u64 = self.conn.zcard(&self.keys.delayed).await.unwrap();
        let scheduled: u64 = self.conn.xlen(&self.keys.scheduled).await.unwrap();
        assert_eq!((delayed, scheduled), (counts.2, counts.2), "delayed jobs");
        let dead: u64 = self.conn.xlen(&self.keys.dead).await.unwrap();
        assert_eq!(dead, counts.3, "dead letters");
    }
}
