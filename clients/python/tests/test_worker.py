"""The worker against a private Redis: jobs run and their results are kept; retries, permanent failures and
exhausted attempts end where SPEC.md says; refused entries are dead-lettered with their reason; a delivery someone
else took over writes nothing; stalled jobs are taken back; a handler past its time limit loses its slot; shutdown
leaves nothing pending."""

import threading
import time
import unittest

from support import RedisTest, rill


def until(what, check, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {what}")


class Working(RedisTest):
    def start(self, handler, **options):
        options.setdefault("block", 0.2)
        w = rill.Worker(self.client, "jobs", handler, **options)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        self.addCleanup(lambda: (w.stop(), t.join(timeout=30)))
        return w, t

    def test_jobs_run_and_their_results_are_kept(self):
        q = self.client.queue("jobs")
        ids = [q.enqueue({"n": i}) for i in range(20)] + [q.enqueue({"n": 20}, id="named")]
        seen = []
        # The handler may go to run() instead of the constructor (rill.Worker(client, name, concurrency=N).run(h)).
        w = rill.Worker(self.client, "jobs", concurrency=4, block=0.2)
        t = threading.Thread(target=w.run, args=(lambda job: (seen.append(job.attempt),
                                                          {"double": job.payload["n"] * 2})[1],), daemon=True)
        t.start()
        self.addCleanup(lambda: (w.stop(), t.join(timeout=30)))
        until("all done", lambda: w.completed == 21)
        for i, jid in enumerate(ids):
            self.assertEqual(q.job(jid).state, "completed", jid)
            self.assertEqual(q.result(jid), {"double": i * 2})
        self.assertEqual(set(seen), {1})
        w.stop()
        t.join(timeout=30)
        # Retired: nothing pending, the consumer gone from the group.
        self.assertEqual(self.r.xpending(q.keys.ready, rill.GROUP)["pending"], 0)
        self.assertEqual(self.r.xinfo_consumers(q.keys.ready, rill.GROUP), [])

    def test_retries_permanent_failures_and_exhausted_attempts(self):
        q = self.client.queue("jobs")
        flaky = q.enqueue("flaky", id="flaky")
        doomed = q.enqueue("doomed", id="doomed")
        broken = q.enqueue("broken", id="broken", max_attempts=2)

        def handler(job):
            if job.payload == "flaky" and job.attempt == 1:
                raise rill.Retry("not yet", after=0.05)
            if job.payload == "doomed":
                raise rill.Permanent("no such address")
            if job.payload == "broken":
                raise ValueError("bug")
            return job.attempt

        w, _ = self.start(handler)
        until("all ended", lambda: {q.state(j) for j in (flaky, doomed, broken)} == {"completed", "dead"})
        self.assertEqual(q.result(flaky), 2)
        dead = {j: q.job(j) for j in (doomed, broken)}
        self.assertEqual(dead["doomed"].state, "dead")
        self.assertIn("no such address", dead["doomed"].error)
        self.assertEqual((dead["broken"].state, dead["broken"].attempts), ("dead", 2))
        self.assertIn("ValueError: bug", dead["broken"].error)
        reasons = {e[1][b"dead_job"]: e[1][b"dead_reason"] for e in self.r.xrange(q.keys.dead)}
        self.assertEqual(reasons, {b"doomed": b"failed", b"broken": b"exhausted"})

    def test_refused_entries_are_dead_lettered_and_the_rest_run(self):
        q = self.client.queue("jobs")
        bad = self.r.xadd(q.keys.ready, {"v": "2", "payload": b"\xf6", "id": "from-the-future"})
        junk = self.r.xadd(q.keys.ready, {"v": "1", "payload": b"\xa1\x61"})  # a truncated CBOR map
        good = q.enqueue("fine")
        w, _ = self.start(lambda job: "ok")
        until("the good one ran", lambda: q.state(good) == "completed")
        until("two dead letters", lambda: self.r.xlen(q.keys.dead) == 2)
        letters = {e[1][b"dead_job"].decode(): e[1] for e in self.r.xrange(q.keys.dead)}
        self.assertEqual(set(letters), {"from-the-future", junk.decode()})
        self.assertEqual(letters["from-the-future"][b"dead_reason"], b"malformed")
        self.assertIn(b"unsupported format version", letters["from-the-future"][b"dead_error"])
        self.assertIn(b"does not decode", letters[junk.decode()][b"dead_error"])
        self.assertTrue(bad)

    def test_a_delivery_taken_over_writes_nothing(self):
        q = self.client.queue("jobs")
        jid = q.enqueue("slow", id="slow")
        started, release = threading.Event(), threading.Event()
        lost = []

        def handler(job):
            started.set()
            release.wait(10)
            lost.append(job.cancelled.is_set())
            return "late"

        w, _ = self.start(handler, lease=1.5)
        until("running", started.is_set)
        # Someone else takes the entry over (as reclaim or adopt would): the first worker's renewal fails.
        entry = q.job(jid).entry_id
        self.r.xclaim(q.keys.ready, rill.GROUP, "other", 0, [entry])
        until("the lease lost", lambda: not w._held)
        release.set()
        until("the handler returned", lambda: lost == [True])
        info = q.job(jid)
        self.assertEqual((info.state, info.owner, info.deliveries), ("active", "other", 2))
        self.assertEqual(w.completed, 0)

    def test_a_crashed_consumers_job_is_taken_back_after_the_lease(self):
        q = self.client.queue("jobs")
        self.r.hset(q.keys.config, "lease_ms", 500)
        jid = q.enqueue("orphan", id="orphan")
        self.r.xgroup_create(q.keys.ready, rill.GROUP, id="0", mkstream=True)
        self.r.xreadgroup(rill.GROUP, "crashed", {q.keys.ready: ">"}, count=1)
        w, _ = self.start(lambda job: job.attempt, reclaim_every=0.1)
        until("recovered", lambda: q.state(jid) == "completed")
        self.assertEqual(w.lease, 0.5)  # the queue's lease, not the worker's default
        self.assertEqual(q.result(jid), 2)

    def test_a_handler_past_its_time_limit_loses_its_slot(self):
        q = self.client.queue("jobs")
        jid = q.enqueue("stuck", id="stuck", timeout=0.3, max_attempts=1)
        nxt = q.enqueue("next")
        gate = threading.Event()
        self.addCleanup(gate.set)

        def handler(job):
            if job.payload == "stuck":
                gate.wait(30)  # ignores job.cancelled
            return "done"

        w, _ = self.start(handler, concurrency=1, lease=1.2)
        until("timed out and dead", lambda: q.state(jid) == "dead", timeout=10)
        self.assertIn("timeout:", q.job(jid).error)
        until("the next job ran in the freed slot", lambda: q.state(nxt) == "completed", timeout=10)


    def test_the_queues_default_limit_applies_to_jobs_without_their_own(self):
        q = self.client.queue("jobs")
        q.set_default_timeout(0.3)
        self.assertEqual(self.r.hget(q.keys.config, "timeout_ms"), b"300")
        jid = q.enqueue("stuck", max_attempts=1)
        gate = threading.Event()
        self.addCleanup(gate.set)
        self.start(lambda job: gate.wait(30), concurrency=1, lease=1.2)
        until("timed out and dead", lambda: q.state(jid) == "dead", timeout=10)
        self.assertIn("timeout:", q.job(jid).error)
        q.set_default_timeout(None)
        self.assertIsNone(self.r.hget(q.keys.config, "timeout_ms"))

    def test_the_worker_beats_into_the_registry_and_adopts_a_crashed_ones_jobs(self):
        q = self.client.queue("jobs")
        # A worker that died holding a job: registered, its last beat 10 s ago, its lease (60 s) far from over.
        self.r.hset(q.keys.config, "lease_ms", 60_000)
        jid = q.enqueue("orphan", id="orphan")
        self.r.xgroup_create(q.keys.ready, rill.GROUP, id="0", mkstream=True)
        self.r.xreadgroup(rill.GROUP, "dead-worker", {q.keys.ready: ">"}, count=1)
        self.r.zadd(q.keys.workers, {"dead-worker": int(time.time() * 1000) - 10_000})
        self.r.hset(q.keys.worker("dead-worker"), mapping={"host": "gone", "last_beat_ms": 1})
        w, t = self.start(lambda job: job.attempt)
        until("adopted and run", lambda: q.state(jid) == "completed", timeout=10)
        self.assertEqual(q.result(jid), 2)
        record = self.r.hgetall(q.keys.worker(w.consumer))
        self.assertEqual(record[b"queue"], b"jobs")
        self.assertEqual(record[b"status"], b"idle")
        self.assertIsNotNone(self.r.zscore(q.keys.workers, w.consumer))
        self.assertIsNone(self.r.zscore(q.keys.workers, "dead-worker"))
        w.stop()
        t.join(timeout=30)
        self.assertEqual(self.r.exists(q.keys.worker(w.consumer)), 0)
        self.assertIsNone(self.r.zscore(q.keys.workers, w.consumer))

    def test_beats_after_registration_are_plain_commands_that_notice_a_lost_record(self):
        q = self.client.queue("jobs")
        w, t = self.start(lambda job: None)
        record = q.keys.worker(w.consumer)
        until("registered", lambda: self.r.hget(record, "host") is not None)
        self.r.config_resetstat()
        first, ttl = self.r.zscore(q.keys.workers, w.consumer), self.r.pttl(record)
        until("two more beats", lambda: self.r.zscore(q.keys.workers, w.consumer) >= first + 1500, timeout=10)
        stats = self.r.info("commandstats")
        # Beats of their own (HSET, ZADD, XADD), not heartbeat.lua, which would set the expiry every time.
        for command in ("hset", "zadd", "xadd"):
            self.assertGreaterEqual(stats[f"cmdstat_{command}"]["calls"], 2, stats)
        self.assertLess(self.r.pttl(record), ttl - 1000, "the registration's expiry is left as it was")
        # The record lost (Redis lost it, or others judged this worker crashed): the next beats register again.
        self.r.delete(record)
        until("registered again", lambda: self.r.hget(record, "host") is not None, timeout=10)
        self.assertGreater(self.r.pttl(record), 0)
        # Out of the registry: a plain beat does not add it back, the script that registers does.
        self.r.zrem(q.keys.workers, w.consumer)
        until("back in the registry", lambda: self.r.zscore(q.keys.workers, w.consumer) is not None, timeout=10)

    def test_plain_beats_follow_the_servers_clock_after_it_changed(self):
        q = self.client.queue("jobs")
        w, t = self.start(lambda job: None)
        until("beating in plain commands", lambda: w._clock is not None)

        def ahead_ms():
            secs, micros = self.r.time()
            return self.r.zscore(q.keys.workers, w.consumer) - (secs * 1000 + micros // 1000)

        # As after a failover to a server whose clock is ten minutes behind the old one's, which redis-py hides:
        # the clock this worker tracks runs ahead of the server's, and one beat carries it (set again if a beat
        # in flight read the clock first).
        for _ in range(5):
            ms, at = w._clock
            w._clock = (ms + 600_000, at)
            try:
                until("a beat on the old clock", lambda: ahead_ms() > 300_000, timeout=2.5)
                break
            except AssertionError:
                pass
        else:
            self.fail("no beat carried the old clock")
        until("beats on the server's clock again", lambda: abs(ahead_ms()) < 2000, timeout=5)

    def test_signals_cancel_a_running_job_pause_the_queue_and_stop_the_worker(self):
        q = self.client.queue("jobs")
        started = threading.Event()

        def handler(job):
            if job.payload == "long":
                started.set()
                if job.cancelled.wait(10):
                    raise RuntimeError("stopped on request")
            return "ok"

        jid = q.enqueue("long", id="long")
        w, t = self.start(handler)
        until("running", started.is_set)
        self.assertEqual(q.cancel(jid), 2)  # left to the worker that runs it
        until("cancelled", lambda: q.state(jid) == "cancelled")
        outcomes = [e[1] for e in self.r.xrange(q.keys.outcomes)]
        self.assertTrue(any(o[b"outcome"] == b"applied" and o[b"receiver"] == w.consumer.encode()
                            for o in outcomes), outcomes)
        # Paused: new jobs wait, and the registry says so; resumed: they run.
        q.pause()
        until("paused", lambda: w._paused)
        waiting = q.enqueue("later")
        time.sleep(0.5)
        self.assertEqual(q.state(waiting), "waiting")
        until("the beat says paused",
              lambda: self.r.hget(q.keys.worker(w.consumer), "status") == b"paused")
        q.resume()
        until("resumed and run", lambda: q.state(waiting) == "completed")
        # A stop for this worker ends run().
        q.signal("stop", f"worker:{w.consumer}")
        t.join(timeout=20)
        self.assertFalse(t.is_alive())


    def test_a_job_resumes_from_its_checkpoint_after_its_worker_dies(self):
        q = self.client.queue("jobs")
        self.r.hset(q.keys.config, "lease_ms", 600)
        jid = q.enqueue({"rows": 10}, id="import")
        seen = []

        def first(job):
            # Saves progress, then loses the job (as after a missed renewal): nothing more is written for it.
            for row in range(4):
                self.assertIsNotNone(job.checkpoint({"row": row}, label=f"row {row}"))
            job._delivery.worker._lose(job._delivery)
            return "never recorded"

        w1, t1 = self.start(first)
        until("checkpointed", lambda: self.r.xlen(q.keys.checkpoints(jid)) == 4)
        w1.stop()
        t1.join(timeout=20)

        def second(job):
            cp = job.resume()
            seen.append((job.attempt, cp.version, cp.state, cp.label))
            job.checkpoint({"row": 9})
            return {"resumed_at": cp.state["row"]}

        self.start(second, reclaim_every=0.1)
        until("finished", lambda: q.state(jid) == "completed", timeout=10)
        # The first worker handed the given-up delivery back when it stopped (no attempt counted); the next one
        # resumes from the newest checkpoint.
        self.assertEqual(seen, [(1, 4, {"row": 3}, "row 3")])
        self.assertEqual(q.result(jid), {"resumed_at": 3})
        # Completed: its checkpoints now expire with the record (24 h), not after the 7 days of a live job.
        ttl = self.r.pttl(q.keys.checkpoints(jid))
        self.assertTrue(0 < ttl <= 24 * 3600 * 1000, ttl)


    def test_priority_levels_are_read_in_order_and_every_step_runs_on_the_levels_stream(self):
        q = self.client.queue("jobs")
        q.set_priorities(3)
        ids = {}
        for level in (2, 1, 0, 2, 1, 0):
            ids.setdefault(level, []).append(q.enqueue({"level": level}, priority=level))
        named = q.enqueue({"level": 2}, priority=2, id="named-2")
        order = []

        def handler(job):
            order.append(job.payload["level"])
            if job.attempt == 1 and job.id == ids[1][0]:
                raise rill.Retry("once more", after=0.01)
            return job.payload["level"]

        w, t = self.start(handler, concurrency=1)
        until("all ran", lambda: len(order) == 8)
        # Strict: level 0 first, then 1, then 2; the retry comes back on level 1 once promoted.
        self.assertEqual(order[:4], [0, 0, 1, 1])
        self.assertEqual(sorted(order[4:]), [1, 2, 2, 2])
        for jid in ids[2] + [named]:
            until(f"{jid} completed", lambda: q.state(jid) == "completed")
        until("the retry completed", lambda: q.state(ids[1][0]) == "completed")
        self.assertEqual((q.result(ids[1][0]), q.job(ids[1][0]).level), (1, 0))
        w.stop()
        t.join(timeout=20)
        for p in range(3):
            self.assertEqual(self.r.xpending(q.keys.level(p), rill.GROUP)["pending"], 0)
        self.assertEqual(q.counts()["waiting"], 0)


    def test_limits_hold_across_two_python_workers(self):
        q = self.client.queue("jobs")
        # At most 2 running at once across the fleet, and at most 1 at once per tenant.
        q.set_concurrency_limit(2)
        q.set_key_limit("x-t", concurrency=1)
        self.assertEqual(self.r.hgetall(q.keys.limit),
                         {b"concurrency": b"2", b"key_field": b"x-t", b"key_concurrency": b"1"})
        for i in range(6):
            q.enqueue({"i": i}, headers={"x-t": "a" if i < 4 else "b"})
        runs, lock = [], threading.Lock()

        def handler(job):
            start = time.monotonic()
            time.sleep(0.1)
            with lock:
                runs.append((job.header("x-t"), start, time.monotonic()))

        self.start(handler, concurrency=4)
        self.start(handler, concurrency=4)
        until("all ran", lambda: len(runs) == 6)

        def most(rows):
            edges = sorted([(s, 1) for _, s, _ in rows] + [(e, -1) for _, _, e in rows])
            now = top = 0
            for _, d in edges:
                now += d
                top = max(top, now)
            return top

        self.assertEqual(most(runs), 2)
        self.assertEqual(most([r for r in runs if r[0] == b"a"]), 1)
        # b's jobs were not queued behind a's four: one of them ran while a still had jobs left.
        a_last = max(s for t, s, _ in runs if t == b"a")
        self.assertLess(min(s for t, s, _ in runs if t == b"b"), a_last)

    def test_a_rate_limit_holds_across_the_workers(self):
        q = self.client.queue("jobs")
        q.set_rate_limit(4, 0.4)
        self.assertEqual(self.r.hmget(q.keys.limit, "rate", "period_ms"), [b"4", b"400"])
        starts, lock = [], threading.Lock()

        def handler(job):
            with lock:
                starts.append(time.monotonic())

        self.start(handler, concurrency=4)
        self.start(handler, concurrency=4)
        time.sleep(0.3)
        for i in range(12):
            q.enqueue(i)
        until("all started", lambda: len(starts) == 12)
        starts.sort()
        for i in range(len(starts) - 4):
            self.assertGreaterEqual(starts[i + 4] - starts[i], 0.36, f"5 starts within {starts[i + 4] - starts[i]}")


    def test_a_worker_cut_off_from_redis_lets_its_jobs_go_before_others_may_take_them(self):
        q = self.client.queue("jobs")
        q.enqueue("long", id="long")
        started, seen = threading.Event(), []

        def handler(job):
            started.set()
            t0 = time.monotonic()
            if job.cancelled.wait(10):
                seen.append(time.monotonic() - t0)
            return "late"

        w, _ = self.start(handler, lease=30)
        until("running", started.is_set)
        time.sleep(0.3)
        # Redis answers nobody for 3.5 s: beats stop landing, and after 2/3 of crash_after (2 s) the worker gives
        # its job up, before anyone may adopt it (3 s).
        self.r.execute_command("CLIENT", "PAUSE", 3500, "ALL")
        until("given up", lambda: seen, timeout=10)
        self.assertLess(seen[0], 3.0)
        until("nothing written for it", lambda: w.lease_failures >= 1)
        time.sleep(2)
        self.assertEqual(w.completed, 0)


    def test_a_paused_job_checkpoints_yields_is_parked_and_resumes_from_its_checkpoint(self):
        q = self.client.queue("jobs")
        jid = q.enqueue({"steps": 3}, id="session")
        started = threading.Event()

        def handler(job):
            cp = job.resume()
            if cp is None:
                job.checkpoint({"step": 1})
                started.set()
                if job.stopping.wait(10):
                    raise rill.Interrupted()
                return "not paused"
            return {"resumed_at": cp.state["step"], "attempt": job.attempt}

        self.start(handler)
        until("running", started.is_set)
        self.assertEqual(q.signal("pause", f"job:{jid}")[1], 2)  # running: left to its worker
        until("parked", lambda: q.state(jid) == "parked")
        q.signal("resume", f"job:{jid}")
        until("resumed and done", lambda: q.state(jid) == "completed")
        # Parking counted no attempt.
        self.assertEqual(q.result(jid), {"resumed_at": 1, "attempt": 1})


    def test_waiting_for_a_result_needs_no_polling(self):
        q = self.client.queue("jobs")
        ok = q.enqueue({"n": 2}, id="ok")
        bad = q.enqueue({"n": -1}, id="bad")
        pending = q.enqueue({"n": 1}, id="later", delay=60)
        gate = threading.Event()

        def handler(job):
            gate.wait(10)
            if job.payload["n"] < 0:
                raise rill.Permanent("negative")
            return job.payload["n"] * 10

        self.start(handler)
        results = {}

        def waiter(jid):
            results[jid] = q.wait(jid, timeout=10)

        threads = [threading.Thread(target=waiter, args=(j,)) for j in (ok, bad)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        started = time.monotonic()
        gate.set()
        for t in threads:
            t.join(timeout=20)
        # Ended by the events, well before the 5 s recheck.
        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual((results[ok].state, results[ok].decoded_result()), ("completed", 20))
        self.assertEqual(results[bad].state, "dead")
        self.assertIn("negative", results[bad].error)
        t0 = time.monotonic()
        self.assertEqual(q.wait(pending, timeout=0.5).state, "delayed")
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual(q.wait("no-such-job", timeout=5).state, "unknown")


if __name__ == "__main__":
    unittest.main()
