"""Partitioned queues (SPEC.md section 2a): the partitions a queue's settings name, and where a job goes."""

import os
import re

from .errors import Protocol

MAX_PARTITIONS = 256


def fnv1a32(data):
    """32-bit FNV-1a of ``data`` (bytes): the routing hash."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


class Partitions:
    """A partitioned queue's hash tags, partition 0 (the queue's name) first."""

    def __init__(self, tags):
        self.tags = list(tags)

    @classmethod
    def from_config(cls, queue, count, tags):
        """The partitions stored in ``<P>:config`` (``partitions``, ``partition_tags``); None if not partitioned."""
        if count is None:
            return None
        count = count.decode() if isinstance(count, bytes) else count
        if not count.isdigit():
            raise Protocol("the queue's partitions (<P>:config)", "`partitions` is not a number")
        n = int(count)
        if n <= 1:
            return None
        tags = (tags.decode() if isinstance(tags, bytes) else tags or "").split()
        if len(tags) != n or n > MAX_PARTITIONS:
            raise Protocol("the queue's partitions (<P>:config)", "`partition_tags` does not list `partitions` tags")
        for i, tag in enumerate(tags):
            if not _is_tag_of(queue, i, tag):
                raise Protocol("the queue's partitions (<P>:config)", f"`{tag}` is not a tag of partition {i}")
        return cls(tags)

    def __len__(self):
        return len(self.tags)

    def of_key(self, key):
        """The partition of a job whose routing key (dedup key, else job id) is ``key``."""
        return fnv1a32(key.encode()) % len(self.tags)

    def id_in(self, partition, now_ms):
        """A generated job id (``~<ms>.<16 hex>``) that routes to ``partition``."""
        while True:
            job_id = f"~{now_ms}.{os.urandom(8).hex()}"
            if self.of_key(job_id) == partition % len(self.tags):
                return job_id


def _is_tag_of(queue, i, tag):
    if i == 0:
        return tag == queue
    m = re.fullmatch(re.escape(queue) + r"~(\d+)(?:\.(\d+))?", tag)
    return m is not None and int(m.group(1)) == i
