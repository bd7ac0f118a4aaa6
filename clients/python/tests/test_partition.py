"""Partitioned queues (SPEC.md section 2a): routing as every rill client routes, and the queue seen as one."""

import unittest

import rill
from rill.partition import Partitions, fnv1a32
from support import RedisTest


class Routing(unittest.TestCase):
    def test_fnv_matches_the_published_vectors(self):
        self.assertEqual(fnv1a32(b""), 0x811C9DC5)
        self.assertEqual(fnv1a32(b"a"), 0xE40C292C)
        self.assertEqual(fnv1a32(b"foobar"), 0xBF9CF968)

    def test_stored_partitions_are_checked(self):
        self.assertIsNone(Partitions.from_config("q", None, None))
        self.assertIsNone(Partitions.from_config("q", b"1", None))
        self.assertEqual(Partitions.from_config("q", b"2", b"q q~1.77").tags, ["q", "q~1.77"])
        for count, tags in [(b"x", None), (b"2", b"q"), (b"2", b"q q~2"), (b"2", b"p q~1"), (b"2", b"q q~1.x")]:
            with self.assertRaises(rill.Protocol):
                Partitions.from_config("q", count, tags)

    def test_generated_ids_route_where_asked(self):
        p = Partitions(["q", "q~1", "q~2"])
        for i in range(30):
            job_id = p.id_in(i, 1_700_000_000_000)
            self.assertTrue(job_id.startswith("~1700000000000."))
            self.assertEqual(p.of_key(job_id), i % 3)


class Partitioned(RedisTest):
    def setUp(self):
        super().setUp()
        self.q = self.client.queue("parts")
        self.r.hset(self.q.keys.config, mapping={"partitions": 3, "partition_tags": "parts parts~1 parts~2.9"})

    def test_jobs_spread_route_and_are_found_as_one_queue(self):
        ids = [self.q.enqueue({"n": n}) for n in range(30)]
        for tag in ["parts", "parts~1", "parts~2.9"]:
            self.assertEqual(self.r.xlen(f"{self.namespace}:{{{tag}}}:ready"), 10, tag)
        named = self.q.enqueue({"n": 1}, id="invoice-7")
        parts = self.client.partitions(self.q.keys)
        home = parts.tags[parts.of_key("invoice-7")]
        self.assertEqual(self.r.hget(f"{self.namespace}:{{{home}}}:index", "invoice-7") is not None, True)
        first = self.q.enqueue_outcome({"n": 2}, dedup_key="user-1")
        again = self.q.enqueue_outcome({"n": 3}, dedup_key="user-1")
        self.assertTrue(again.duplicate)
        self.assertEqual(again.id, first.id)
        for job_id in ids + [named, first.id]:
            self.assertEqual(self.q.state(job_id), "waiting", job_id)
        self.assertEqual(self.q.counts()["waiting"], 32)
        self.assertEqual(self.q.cancel(ids[4]), 1)
        self.assertEqual(self.q.state(ids[4]), "cancelled")

    def test_the_worker_refuses_a_partitioned_queue(self):
        w = rill.Worker(self.client, "parts", handler=lambda job: None)
        with self.assertRaises(rill.Partitioned):
            w.run()


if __name__ == "__main__":
    unittest.main()
