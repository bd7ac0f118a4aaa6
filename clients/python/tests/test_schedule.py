"""Schedules (SPEC.md section 6e): fire times as rill's Rust workers compute them (croner; the expected instants
below are what it gives), across daylight-saving changes; the missed-fire policies; managing schedules in Redis;
workers firing each fire time exactly once."""

import threading
import time
import unittest
from datetime import datetime, timezone

from support import RedisTest, rill
from rill.schedule import NEVER, Schedule

from test_worker import until


def utc(*a):
    return int(datetime(*a, tzinfo=timezone.utc).timestamp() * 1000)


def times(s, start, n):
    out, t = [], start
    for _ in range(n):
        t = s.next_after(t)
        out.append(t)
    return out


class FireTimes(unittest.TestCase):
    def test_cron_times_follow_the_zone_across_daylight_saving_as_croner_does(self):
        berlin = Schedule.cron("30 2 * * *", tz="Europe/Berlin")
        # 2026-03-29: 02:30 does not exist in Berlin: it runs at 03:00 CEST; the next night at 00:30 UTC.
        self.assertEqual(times(berlin, utc(2026, 3, 28, 11), 2), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)])
        # 2026-10-25: 02:30 happens twice: it runs the first time only.
        self.assertEqual(times(berlin, utc(2026, 10, 24, 11), 2),
                         [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)])
        hourly = Schedule.cron("0 * * * *", tz="Europe/Berlin")
        self.assertEqual(times(hourly, utc(2026, 10, 24, 23, 10), 3),
                         [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)])
        half = Schedule.cron("*/30 * * * *", tz="Europe/Berlin")
        self.assertEqual(times(half, utc(2026, 3, 29, 0, 10), 3),
                         [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30)])
        self.assertEqual(times(Schedule.cron("30 2 * * *"), utc(2026, 3, 28, 11), 1), [utc(2026, 3, 29, 2, 30)])

    def test_croners_extensions_and_seconds_read_the_same(self):
        last_friday = Schedule.cron("0 0 * * 5L", tz="Europe/Berlin")
        self.assertEqual(times(last_friday, utc(2026, 10, 24), 2), [utc(2026, 10, 29, 23), utc(2026, 11, 26, 23)])
        self.assertEqual(times(Schedule.cron("0 0 15W * *", tz="Europe/Berlin"), utc(2026, 7, 20), 1),
                         [utc(2026, 8, 13, 22)])
        self.assertEqual(times(Schedule.cron("0 0 * * 5#2"), utc(2026, 1, 1), 1), [utc(2026, 1, 9)])
        # Day of month and day of week: either matches (Vixie cron).
        self.assertEqual(times(Schedule.cron("0 0 13 * 5"), utc(2026, 1, 1), 3),
                         [utc(2026, 1, 2), utc(2026, 1, 9), utc(2026, 1, 13)])
        self.assertEqual(times(Schedule.cron("*/15 * * * * *"), utc(2026, 1, 1) + 500, 2),
                         [utc(2026, 1, 1, 0, 0, 15), utc(2026, 1, 1, 0, 0, 30)])
        self.assertEqual(times(Schedule.cron("@daily"), utc(2026, 1, 1, 5), 1), [utc(2026, 1, 2)])
        self.assertEqual(times(Schedule.every(30), 1000, 2), [31_000, 61_000])

    def test_bad_definitions_are_refused(self):
        for bad in (lambda: Schedule.cron("not cron"), lambda: Schedule.cron("0 3 * * *", tz="Mars/Olympus"),
                    lambda: Schedule.every(0.5), lambda: Schedule.every(5, missed="all"),
                    lambda: Schedule.every(5, missed="sometimes"), lambda: Schedule.every(5, priority=16),
                    lambda: Schedule.cron("0 0 30 2 *")):
            with self.assertRaises(rill.InvalidOption):
                bad()

    def test_one_due_time_on_time_fires_and_missed_ones_follow_the_policy(self):
        minute = 60_000
        for missed, kw in (("skip", {}), ("once", {}), ("all", {"missed_max": 3})):
            s = Schedule.cron("* * * * *", missed=missed, **kw)
            self.assertEqual(s.plan(10 * minute, 10 * minute + 5000), ([10 * minute], 11 * minute))
        # Five minutes without a worker, woken 30 s into the sixth.
        now = 15 * minute + 30_000
        plan = lambda **kw: Schedule.cron("* * * * *", **kw).plan(10 * minute, now)  # noqa: E731
        self.assertEqual(plan(missed="skip"), ([15 * minute], 16 * minute))
        self.assertEqual(plan(missed="once"), ([15 * minute], 16 * minute))
        self.assertEqual(plan(missed="all", missed_max=3), ([13 * minute, 14 * minute, 15 * minute], 16 * minute))
        # The newest missed time itself too old: skip runs nothing.
        late = Schedule.every(3600, missed="skip").plan(0, 2 * 3600_000 + 120_000)
        self.assertEqual(late, ([], 3 * 3600_000))
        # Ten years of seconds: bounded work.
        fires, nxt = Schedule.every(1, missed="all", missed_max=1_000_000).plan(0, 10 * 365 * 86400_000)
        self.assertEqual((len(fires), fires[-1], nxt), (10_000, 10 * 365 * 86400_000, 10 * 365 * 86400_000 + 1000))


class Managing(RedisTest):
    def test_schedules_are_stored_as_spec_writes_them_listed_paused_resumed_and_removed(self):
        q = self.client.queue("reports")
        before = int(time.time() * 1000)
        info = q.schedule("nightly", Schedule.cron("0 3 * * *", tz="Europe/Berlin", priority=1), {"kind": "full"})
        self.assertEqual((info.name, info.paused, info.fired, info.decoded_payload()), ("nightly", False, 0, {"kind": "full"}))
        self.assertGreater(info.next_ms, before)
        h = self.r.hgetall(q.keys.schedule("nightly"))
        self.assertEqual({k: h[k] for k in (b"kind", b"cron", b"tz", b"missed", b"missed_max", b"priority")},
                         {b"kind": b"cron", b"cron": b"0 3 * * *", b"tz": b"Europe/Berlin", b"missed": b"once",
                          b"missed_max": b"1", b"priority": b"1"})
        self.assertEqual(int(self.r.zscore(q.keys.schedules, "nightly")), info.next_ms)
        self.assertEqual(self.r.smembers(q.keys.queues), {b"reports"})
        q.schedule("poll", Schedule.every(30, missed="all", missed_max=5), None)
        self.assertEqual([s.name for s in q.schedules()], ["nightly", "poll"])
        self.assertEqual(q.schedule_info("poll").schedule, Schedule.every(30, missed="all", missed_max=5))

        self.assertTrue(q.pause_schedule("poll"))
        self.assertEqual(self.r.zscore(q.keys.schedules, "poll"), float("inf"))
        self.assertIsNone(q.schedule_info("poll").next_ms)
        # Replacing a paused schedule keeps it paused.
        q.schedule("poll", Schedule.every(60), "new")
        self.assertTrue(q.schedule_info("poll").paused)
        self.assertTrue(q.resume_schedule("poll"))
        p = q.schedule_info("poll")
        self.assertFalse(p.paused)
        self.assertAlmostEqual(p.next_ms, int(time.time() * 1000) + 60_000, delta=2000)

        self.assertTrue(q.remove_schedule("poll"))
        self.assertFalse(q.remove_schedule("poll"))
        self.assertFalse(q.pause_schedule("poll"))
        self.assertFalse(q.resume_schedule("poll"))
        self.assertEqual(self.r.zscore(q.keys.schedules, "poll"), None)
        self.assertEqual([s.name for s in q.schedules()], ["nightly"])
        with self.assertRaises(rill.InvalidName):
            q.schedule("a:b", Schedule.every(5))


class Firing(RedisTest):
    def start(self, handler):
        w = rill.Worker(self.client, "ticks", handler, concurrency=4, block=0.2)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        self.addCleanup(lambda: (w.stop(), t.join(timeout=30)))

    def test_two_workers_fire_each_time_once_and_jobs_carry_the_schedule(self):
        q = self.client.queue("ticks")
        ran, lock = [], threading.Lock()

        def handler(job):
            with lock:
                ran.append(job.schedule)

        self.start(handler)
        self.start(handler)
        q.schedule("tick", Schedule.every(1), {"n": 1})
        until("four fires", lambda: len(ran) >= 4)
        time.sleep(0.3)
        with lock:
            fires = sorted(at for name, at in ran if name == "tick")
        self.assertEqual(len(fires), len(ran))
        self.assertEqual(len(set(fires)), len(fires), "a fire time ran twice")
        self.assertTrue(all(b - a == 1000 for a, b in zip(fires, fires[1:])), fires)
        info = q.schedule_info("tick")
        self.assertGreaterEqual(info.fired, len(fires))
        self.assertEqual(info.last_fire_ms, int(self.r.hget(q.keys.schedule("tick"), "last_fire_ms")))

    def test_missed_times_follow_the_policy_when_a_worker_comes_back(self):
        q = self.client.queue("ticks")
        now = int(time.time() * 1000)
        for name, s in (("skip", Schedule.every(3600, missed="skip")),
                        ("all", Schedule.every(3600, missed="all", missed_max=2)),
                        ("once", Schedule.every(3600))):
            q.schedule(name, s, name)
            # As if no worker ran for three hours and a half.
            self.r.zadd(q.keys.schedules, {name: now - 3 * 3600_000 - 1800_000})
        ran, lock = [], threading.Lock()

        def handler(job):
            with lock:
                ran.append(job.schedule[0])

        self.start(handler)
        until("the schedules moved on", lambda: all(
            self.r.zscore(q.keys.schedules, n) > now for n in ("skip", "all", "once")))
        until("three jobs", lambda: len(ran) == 3)
        time.sleep(0.5)
        self.assertEqual(sorted(ran), ["all", "all", "once"])
        # A member whose hash is gone is dropped rather than fired.
        self.r.zadd(q.keys.schedules, {"orphan": now})
        until("orphan dropped", lambda: self.r.zscore(q.keys.schedules, "orphan") is None)
        self.assertNotEqual(NEVER, 0)


if __name__ == "__main__":
    unittest.main()
