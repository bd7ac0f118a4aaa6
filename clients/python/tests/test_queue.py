"""Producing and looking, against a private Redis: plain jobs are one XADD whose entry id is the job id; ids and
dedup keys follow SPEC.md's one dedup rule; delays, priorities and headers land where SPEC.md says; bad input is
refused with a typed error before anything is written."""

import time
import unittest
from datetime import timedelta

from support import RedisTest, rill


class Producing(RedisTest):
    def test_a_plain_job_is_one_entry_whose_id_is_the_job_id(self):
        q = self.client.queue("emails")
        jid = q.enqueue({"to": "ada@example.com"}, max_attempts=3, timeout=2.5, headers={"x-tenant": "acme"})
        entries = self.r.xrange(q.keys.ready)
        self.assertEqual([e[0].decode() for e in entries], [jid])
        fields = entries[0][1]
        self.assertEqual(fields[b"v"], b"1")
        self.assertEqual(rill.wire.decode(fields[b"payload"]), {"to": "ada@example.com"})
        self.assertEqual((fields[b"max_attempts"], fields[b"timeout_ms"]), (b"3", b"2500"))
        self.assertEqual(fields[b"x-tenant"], b"acme")
        self.assertEqual(self.r.smembers(q.keys.queues), {b"emails"})
        self.assertEqual(q.state(jid), "waiting")
        self.assertEqual(q.counts()["waiting"], 1)

    def test_an_id_or_a_dedup_key_refuses_a_second_job(self):
        q = self.client.queue("orders")
        first = q.enqueue_outcome({"n": 1}, id="order-42")
        self.assertEqual(first, rill.EnqueueOutcome("order-42", False))
        self.assertEqual(q.enqueue_outcome({"n": 2}, id="order-42"), rill.EnqueueOutcome("order-42", True))
        a = q.enqueue({"n": 3}, dedup_key="invoice-7")
        self.assertEqual(len(a), 32)
        self.assertEqual(q.enqueue_outcome({"n": 4}, dedup_key="invoice-7"), rill.EnqueueOutcome(a, True))
        self.assertEqual(self.r.xlen(q.keys.ready), 2)
        # The dedup record lives the TTL, counted from the first enqueue.
        q.enqueue(1, id="short", dedup_ttl=timedelta(milliseconds=1500))
        ttl = self.r.pttl(q.keys.dedup("short"))
        self.assertTrue(0 < ttl <= 1500, ttl)

    def test_delayed_jobs_wait_in_the_delayed_set(self):
        q = self.client.queue("later")
        jid = q.enqueue("x", delay=60)
        self.assertEqual(q.state(jid), "delayed")
        due = self.r.zscore(q.keys.delayed, jid)
        self.assertAlmostEqual(due / 1000, time.time() + 60, delta=5)
        at = q.enqueue("y", run_at=time.time() + 3600)
        self.assertAlmostEqual(self.r.zscore(q.keys.delayed, at) / 1000, time.time() + 3600, delta=5)
        self.assertEqual(q.counts()["delayed"], 2)

    def test_priority_levels_route_to_their_stream_and_are_checked(self):
        q = self.client.queue("prio")
        with self.assertRaises(rill.NoSuchPriority) as e:
            q.enqueue("x", priority=2)
        self.assertEqual(e.exception.levels, 1)
        self.r.hset(q.keys.priorities, "levels", 3)
        self.r.xgroup_create(q.keys.level(2), rill.GROUP, id="0", mkstream=True)
        jid = q.enqueue("x", priority=2)
        entry, level = jid.split("@")
        self.assertEqual(level, "2")
        self.assertEqual([e[0].decode() for e in self.r.xrange(q.keys.level(2))], [entry])
        info = q.job(jid)
        self.assertEqual((info.state, info.level), ("waiting", 2))

    def test_bad_input_is_refused_before_anything_is_written(self):
        q = self.client.queue("strict")
        for bad in [dict(id=""), dict(id="a b"), dict(id="x" * 257), dict(max_attempts=0),
                    dict(max_attempts=1_000_001), dict(priority=16), dict(timeout=0), dict(delay=-1),
                    dict(headers={"tenant": "a"})]:
            with self.assertRaises((rill.InvalidJobId, rill.InvalidOption), msg=bad):
                q.enqueue(1, **bad)
        small = rill.Client(self.server.url, namespace=self.namespace, max_payload=16)
        with self.assertRaises(rill.PayloadTooLarge):
            small.queue("strict").enqueue("x" * 100)
        with self.assertRaises(rill.InvalidName):
            self.client.queue("a:b")
        self.assertEqual(self.r.exists(q.keys.ready, q.keys.delayed), 0)

    def test_enqueue_many_pipelines_plain_jobs_in_order(self):
        q = self.client.queue("bulk")
        ids = q.enqueue_many([{"n": i} for i in range(2500)], chunk=1000)
        self.assertEqual(len(ids), 2500)
        self.assertEqual([e[0].decode() for e in self.r.xrange(q.keys.ready, count=3)], ids[:3])

    def test_unknown_jobs(self):
        q = self.client.queue("nothing")
        self.assertEqual(q.state("no-such-job"), "unknown")
        self.assertIsNone(q.result("no-such-job"))


if __name__ == "__main__":
    unittest.main()
