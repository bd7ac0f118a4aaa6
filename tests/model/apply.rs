//! One operation applied to Redis through the scripts and to the model, asserting the replies agree.

use super::*;

impl Harness {
    pub(super) async fn apply(&mut self, op: &Op) {
        let now = self.model.now;
        match *op {
            Op::Enqueue {
                key,
                delay,
                max,
                level,
                tenant,
            } => {
                let level = level % self.levels;
                let tenant = if self.limits.keyed { tenant.min(3) } else { 3 };
                let tenant_s = format!("t{tenant}");
                let payload = rill::wire::encode(&7u8).unwrap();
                let max_s = max.map(|m| m.to_string());
                let level_s = level.to_string();
                let mut fields: Vec<(&str, &[u8])> = vec![("v", b"1"), ("payload", &payload)];
                if let Some(m) = &max_s {
                    fields.push(("max_attempts", m.as_bytes()));
                }
                if level > 0 {
                    fields.push(("priority", level_s.as_bytes()));
                }
                if tenant < 3 {
                    fields.push(("x-t", tenant_s.as_bytes()));
                }
                let max = max.map_or(DEFAULT_MAX, u32::from);
                // Unnamed above level 0: enqueue.lua checks the level; its id is `<entry id>@<level>` (SPEC §6g).
                if key.is_none() && delay.is_none() && level > 0 {
                    let out = scripts::enqueue(
                        &mut self.conn,
                        &self.keys,
                        NewJob {
                            job_id: "",
                            dedup_key: "",
                            dedup_ttl_ms: 0,
                            due_ms: 0,
                            now_ms: now,
                            fields: &fields,
                            priority: level,
                        },
                    )
                    .await
                    .unwrap();
                    let Enqueued::Ready(id) = out else {
                        panic!("{out:?}")
                    };
                    let (entry, at) = id.split_once('@').expect("an unnamed level job's id");
                    assert_eq!(at, level.to_string());
                    self.model.jobs.insert(
                        id.clone(),
                        JobModel {
                            state: State::Waiting,
                            entry: entry.to_owned(),
                            made: 0,
                            max,
                            level,
                            tenant,
                        },
                    );
                    return;
                }
                if key.is_none() && delay.is_none() {
                    let mut cmd = redis::cmd("XADD");
                    cmd.arg(&self.keys.ready).arg("*");
                    for (k, v) in &fields {
                        cmd.arg(*k).arg(*v);
                    }
                    let id: String = cmd.query_async(&mut self.conn).await.unwrap();
                    self.model.jobs.insert(
                        id.clone(),
                        JobModel {
                            state: State::Waiting,
                            entry: id,
                            made: 0,
                            max,
                            level: 0,
                            tenant,
                        },
                    );
                    return;
                }
                let (job, ttl) = match key {
                    Some(k) => (format!("k{k}"), 3_600_000),
                    None => {
                        self.model.delayed_ids += 1;
                        (format!("d{}", self.model.delayed_ids), 0)
                    }
                };
                let due = delay.map_or(0, |d| now + u64::from(d));
                let out = scripts::enqueue(
                    &mut self.conn,
                    &self.keys,
                    NewJob {
                        job_id: &job,
                        dedup_key: &job,
                        dedup_ttl_ms: ttl,
                        due_ms: due,
                        now_ms: now,
                        fields: &fields,
                        priority: level,
                    },
                )
                .await
                .unwrap();
                if let Some(existing) =
                    key.and_then(|k| self.model.dedup.get(&format!("k{k}")).cloned())
                {
                    assert_eq!(
                        out,
                        Enqueued::Duplicate(existing),
                        "a dedup key never yields two jobs"
                    );
                    return;
                }
                if ttl > 0 {
                    self.model.dedup.insert(job.clone(), job.clone());
                }
                let entry = self.index(&job).await;
                let state = if due > now {
                    assert_eq!(out, Enqueued::Delayed(job.clone()));
                    State::Delayed { due }
                } else {
                    assert_eq!(out, Enqueued::Ready(job.clone()));
                    State::Waiting
                };
                self.model.jobs.insert(
                    job,
                    JobModel {
                        state,
                        entry,
                        made: 0,
                        max,
                        level,
                        tenant,
                    },
                );
            }
            Op::Claim { worker, count } => {
                let consumer = self.model.consumers[worker].clone();
                let (count, got) = self.read(&consumer, count).await;
                // The model's view: waiting jobs by level, then in entry order.
                let mut waiting: Vec<(u8, String, String)> = self
                    .model
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == State::Waiting)
                    .map(|(id, j)| (j.level, j.entry.clone(), id.clone()))
                    .collect();
                waiting.sort_by_key(|(l, e, _)| (*l, entry_key(e)));
                let want: Vec<(u8, String, String)> = if self.limits.keyed {
                    // Per-key limits choose which (held keys take turns): every one handed out must be waiting;
                    // how many, read() checked against the tenants' room.
                    let want: Vec<_> = got
                        .iter()
                        .map(|(l, e)| {
                            waiting
                                .iter()
                                .find(|(wl, we, _)| wl == l && we == e)
                                .cloned()
                                .unwrap_or_else(|| panic!("{e}@{l} handed out but not waiting"))
                        })
                        .collect();
                    assert!(want.len() <= usize::from(count));
                    want
                } else {
                    waiting.into_iter().take(usize::from(count)).collect()
                };
                self.limits.started += got.len() as u64;
                assert_eq!(
                    got,
                    want.iter()
                        .map(|(l, e, _)| (*l, e.clone()))
                        .collect::<Vec<_>>(),
                    "claim order"
                );
                for (level, entry, job) in want {
                    self.model.jobs.get_mut(&job).unwrap().state = State::Active {
                        consumer: consumer.clone(),
                        token: 1,
                        expired: false,
                    };
                    self.model.held[worker].push(Held {
                        entry,
                        token: 1,
                        job,
                        level,
                    });
                }
            }
            Op::Ack { worker, pick } | Op::ForgedAck { worker, pick } => {
                let Some(h) = self.pick(worker, pick) else {
                    return;
                };
                let forged = matches!(op, Op::ForgedAck { .. });
                // A token no delivery ever had (token + 1 may be this consumer's own newer delivery).
                let token = if forged { h.token + 1_000_000 } else { h.token };
                let consumer = self.model.consumers[worker].clone();
                let item = AckItem {
                    delivery: DeliveryRef {
                        entry_id: &h.entry,
                        token,
                    },
                    job_id: &h.job,
                    attempt: 1,
                    result: b"",
                    touched: false,
                };
                let retention = Retention {
                    ms: 3_600_000,
                    keep_all: true,
                };
                let ok = scripts::ack(
                    &mut self.conn,
                    &caller(&self.keys, &consumer).at(h.level),
                    Ack {
                        now_ms: now,
                        retention,
                        completed_event: true,
                        items: &[item],
                        xackdel: true,
                    },
                )
                .await
                .unwrap()[0];
                let expected = !forged && self.current(&h, &consumer);
                assert_eq!(
                    ok, expected,
                    "ack accepted iff the delivery is current: {h:?}"
                );
                if ok {
                    self.model.jobs.get_mut(&h.job).unwrap().state = State::Completed;
                }
                if !forged {
                    self.drop_held(worker, &h);
                }
            }
            Op::Fail {
                worker,
                pick,
                permanent,
                delay,
            } => {
                let Some(h) = self.pick(worker, pick) else {
                    return;
                };
                let consumer = self.model.consumers[worker].clone();
                let mode = if permanent {
                    FailMode::Dead(DeadReason::Failed)
                } else {
                    FailMode::Retry {
                        delay_ms: u64::from(delay),
                    }
                };
                let out = scripts::fail(
                    &mut self.conn,
                    &caller_at(&self.keys, &consumer, h.level),
                    Fail {
                        delivery: DeliveryRef {
                            entry_id: &h.entry,
                            token: h.token,
                        },
                        job_id: &h.job,
                        now_ms: now,
                        mode,
                        error: "boom",
                    },
                )
                .await
                .unwrap();
                self.drop_held(worker, &h);
                if !self.current(&h, &consumer) {
                    assert_eq!(out, FailOutcome::Stale, "a stale failure changes nothing");
                    return;
                }
                let job = self.model.jobs.get_mut(&h.job).unwrap();
                job.made += 1;
                let made = job.made;
                if permanent || made >= job.max {
                    assert_eq!(out, FailOutcome::Dead { attempts: made });
                    job.state = State::Dead;
                } else if delay == 0 {
                    assert_eq!(out, FailOutcome::Requeued { attempts: made });
                    job.state = State::Waiting;
                    let e = self.index(&h.job).await;
                    self.model.jobs.get_mut(&h.job).unwrap().entry = e;
                } else {
                    assert_eq!(out, FailOutcome::RetryScheduled { attempts: made });
                    job.state = State::Delayed {
                        due: now + u64::from(delay),
                    };
                    let e = self.index(&h.job).await;
                    self.model.jobs.get_mut(&h.job).unwrap().entry = e;
                }
            }
            Op::Extend { worker, pick } => {
                let Some(h) = self.pick(worker, pick) else {
                    return;
                };
                let consumer = self.model.consumers[worker].clone();
                let ok = scripts::extend(
                    &mut self.conn,
                    &caller(&self.keys, &consumer).at(h.level),
                    &[DeliveryRef {
                        entry_id: &h.entry,
                        token: h.token,
                    }],
                )
                .await
                .unwrap()[0];
                assert_eq!(
                    ok,
                    self.current(&h, &consumer),
                    "extend accepted iff current"
                );
                if ok {
                    if let State::Active { expired, .. } =
                        &mut self.model.jobs.get_mut(&h.job).unwrap().state
                    {
                        *expired = false;
                    }
                } else {
                    self.drop_held(worker, &h);
                }
            }
            Op::Crash { worker } => {
                // The process is gone: it forgets what it held; Redis still has those entries pending to it.
                self.model.held[worker].clear();
                self.model.generation += 1;
                self.model.consumers[worker] = format!("w{worker}-{}", self.model.generation);
            }
            Op::Expire { pick } => {
                let active: Vec<(String, String, String, u8)> = self
                    .model
                    .jobs
                    .iter()
                    .filter_map(|(id, j)| match &j.state {
                        State::Active { consumer, .. } => {
                            Some((id.clone(), j.entry.clone(), consumer.clone(), j.level))
                        }
                        _ => None,
                    })
                    .collect();
                if active.is_empty() {
                    return;
                }
                let (job, entry, consumer, level) = active[pick % active.len()].clone();
                let _: redis::Value = redis::cmd("XCLAIM")
                    .arg(self.keys.level(level))
                    .arg(GROUP)
                    .arg(&consumer)
                    .arg(0)
                    .arg(&entry)
                    .arg("IDLE")
                    .arg(LEASE_MS * 10)
                    .arg("JUSTID")
                    .query_async(&mut self.conn)
                    .await
                    .unwrap();
                if let State::Active { expired, .. } =
                    &mut self.model.jobs.get_mut(&job).unwrap().state
                {
                    *expired = true;
                }
            }
            Op::Reclaim { worker } => {
                let consumer = self.model.consumers[worker].clone();
                let mut taken = Vec::new();
                let mut dead = 0;
                for level in 0..self.levels {
                    let mut cursor = "0-0".to_owned();
                    for _ in 0..100 {
                        let page = scripts::reclaim(
                            &mut self.conn,
                            &caller_at(&self.keys, &consumer, level),
                            Reclaim {
                                min_idle_ms: LEASE_MS,
                                cursor: &cursor,
                                count: 1000,
                                now_ms: now,
                            },
                        )
                        .await
                        .unwrap();
                        taken.extend(page.taken.into_iter().map(|(e, t)| (level, e.id, t)));
                        dead += page.dead_lettered;
                        cursor = page.cursor;
                        if cursor == "0-0" {
                            break;
                        }
                    }
                }
                let mut expired: Vec<(u8, String, String)> = self
                    .model
                    .jobs
                    .iter()
                    .filter(|(_, j)| matches!(j.state, State::Active { expired: true, .. }))
                    .map(|(id, j)| (j.level, j.entry.clone(), id.clone()))
                    .collect();
                expired.sort_by_key(|(l, e, _)| (*l, entry_key(e)));
                let mut want_taken = Vec::new();
                let mut want_dead = 0;
                for (level, entry, job) in expired {
                    let j = self.model.jobs.get_mut(&job).unwrap();
                    let State::Active { token, .. } = j.state.clone() else {
                        unreachable!()
                    };
                    j.made += 1;
                    assert!(j.made <= j.max, "attempts never exceed the maximum");
                    if j.made >= j.max {
                        j.state = State::Dead;
                        want_dead += 1;
                    } else {
                        j.state = State::Active {
                            consumer: consumer.clone(),
                            token: token + 1,
                            expired: false,
                        };
                        want_taken.push((level, entry.clone(), token + 1));
                        self.model.held[worker].push(Held {
                            entry,
                            token: token + 1,
                            job,
                            level,
                        });
                    }
                }
                assert_eq!(
                    taken, want_taken,
                    "reclaim takes exactly the expired deliveries"
                );
                assert_eq!(dead, want_dead);
            }
            Op::Promote { advance } => {
                self.model.now += u64::from(advance);
                let now = self.model.now;
                let moved = scripts::promote(&mut self.conn, &self.keys, now, 1000, 100)
                    .await
                    .unwrap()
                    .moved;
                let due: Vec<String> = self
                    .model
                    .jobs
                    .iter()
                    .filter(|(_, j)| matches!(j.state, State::Delayed { due } if due <= now))
                    .map(|(id, _)| id.clone())
                    .collect();
                assert_eq!(moved as usize, due.len(), "promotes exactly the due jobs");
                for job in due {
                    let e = self.index(&job).await;
                    let j = self.model.jobs.get_mut(&job).unwrap();
                    j.state = State::Waiting;
                    j.entry = e;
                }
            }
            Op::Shutdown { worker } => {
                let consumer = self.model.consumers[worker].clone();
                let mut held = std::mem::take(&mut self.model.held[worker]);
                held.sort_by_key(|h| h.level);
                let mut codes = Vec::new();
                for same in held.chunk_by(|a, b| a.level == b.level) {
                    let refs: Vec<DeliveryRef<'_>> = same
                        .iter()
                        .map(|h| DeliveryRef {
                            entry_id: &h.entry,
                            token: h.token,
                        })
                        .collect();
                    let c = caller(&self.keys, &consumer).at(same[0].level);
                    codes.extend(
                        scripts::release(&mut self.conn, &c, now, &refs)
                            .await
                            .unwrap(),
                    );
                }
                for (h, code) in held.iter().zip(codes) {
                    if self.current(h, &consumer) {
                        assert_eq!(code, HandBack::Done);
                        let e = self.index(&h.job).await;
                        let j = self.model.jobs.get_mut(&h.job).unwrap();
                        j.state = State::Waiting;
                        j.entry = e;
                    } else {
                        assert_eq!(code, HandBack::Stale);
                    }
                }
                // Leaving a level's group only works with nothing pending there; a crashed predecessor's entries
                // may still be.
                for level in 0..self.levels {
                    let still_pending = self.model.jobs.values().any(|j| {
                        j.level == level
                            && matches!(&j.state, State::Active { consumer: c, .. } if *c == consumer)
                    });
                    let retired = scripts::retire(&mut self.conn, &self.keys, level, &consumer)
                        .await
                        .unwrap();
                    assert_eq!(retired, !still_pending, "retire only an idle consumer");
                }
                self.model.generation += 1;
                self.model.consumers[worker] = format!("w{worker}-{}", self.model.generation);
            }
        }
    }
}
