"""The one place that builds Redis keys (SPEC.md section 1 and 2). Every key of a queue carries the hash tag
``{queue}``, so a queue's keys share one Redis Cluster slot and every script runs unchanged on a cluster."""

import re

from .errors import InvalidJobId, InvalidName

GROUP = "workers"
"""The consumer group every worker of a queue joins."""

DEFAULT_NAMESPACE = "rill"
MAX_NAME_LEN = 128
MAX_JOB_ID_LEN = 256
LEVELS = 16
"""Most priority levels a queue can have (0 to 15)."""

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def validate_name(name):
    """Checks a queue name or namespace: 1-128 bytes of ASCII letters, digits, '.', '_' and '-'."""
    if not isinstance(name, str) or not name:
        raise InvalidName(name, "empty")
    if len(name.encode()) > MAX_NAME_LEN:
        raise InvalidName(name, "longer than 128 bytes")
    if "{" in name or "}" in name:
        raise InvalidName(name, "contains a brace, which would change the Redis Cluster hash tag")
    if ":" in name:
        raise InvalidName(name, "contains ':', the key separator")
    if not _NAME.match(name):
        raise InvalidName(name, "only ASCII letters, digits, '.', '_' and '-' are allowed")


def validate_job_id(job_id):
    """Checks a caller's job id or dedup key: 1-256 bytes of UTF-8 without whitespace or control characters."""
    if not isinstance(job_id, str) or not job_id:
        raise InvalidJobId(job_id, "empty")
    if len(job_id.encode()) > MAX_JOB_ID_LEN:
        raise InvalidJobId(job_id, "longer than 256 bytes")
    if any(c.isspace() or _is_control(c) for c in job_id):
        raise InvalidJobId(job_id, "contains whitespace or a control character")


def _is_control(c):
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F


def queues_key(namespace):
    """The namespace's set of queue names (not under a hash tag: it spans queues)."""
    validate_name(namespace)
    return f"{namespace}:queues"


class QueueKeys:
    """All the keys of one queue (SPEC.md section 2)."""

    def __init__(self, namespace, queue, tag=None):
        validate_name(namespace)
        validate_name(queue)
        self.namespace = namespace
        self.queue = queue
        p = f"{namespace}:{{{tag or queue}}}"
        self.prefix = p
        self.ready = f"{p}:ready"
        self.delayed = f"{p}:delayed"
        self.scheduled = f"{p}:scheduled"
        self.index = f"{p}:index"
        self.dead = f"{p}:dead"
        self.dead_index = f"{p}:dead:index"
        self.events = f"{p}:events"
        self.signals = f"{p}:signals"
        self.outcomes = f"{p}:signals:outcomes"
        self.paused = f"{p}:paused"
        self.parked = f"{p}:parked"
        self.workers = f"{p}:workers"
        self.heartbeats = f"{p}:heartbeats"
        self.schedules = f"{p}:schedules"
        self.limit = f"{p}:limit"
        self.limit_starts = f"{p}:limit:starts"
        self.held = f"{p}:held"
        self.key_ring = f"{p}:keys:ring"
        self.key_queued = f"{p}:keys:queued"
        self.key_running = f"{p}:keys:running"
        self.key_starts = f"{p}:keys:starts"
        self.priorities = f"{p}:priorities"
        self.config = f"{p}:config"
        self.queues = queues_key(namespace)

    def partition(self, tag):
        """The keys of the partition with hash tag ``tag`` of this partitioned queue (SPEC.md section 2a)."""
        return QueueKeys(self.namespace, self.queue, tag)

    def level(self, level):
        """The stream of priority level ``level`` (0 is ``ready``; past the last, the last)."""
        level = min(max(int(level), 0), LEVELS - 1)
        return self.ready if level == 0 else f"{self.ready}:{level}"

    def level_tail(self):
        """What the scripts that route or find jobs by level take as their last KEYS: the priorities hash, the
        streams of levels 1 to 15, then the held set of per-key limits (SPEC.md section 6)."""
        return [self.priorities] + [self.level(p) for p in range(1, LEVELS)] + [self.held]

    def job(self, job_id):
        return f"{self.prefix}:job:{job_id}"

    def checkpoints(self, job_id):
        return f"{self.prefix}:ckpt:{job_id}"

    def dedup(self, key):
        return f"{self.prefix}:dedup:{key}"

    def worker(self, consumer):
        return f"{self.prefix}:worker:{consumer}"

    def schedule(self, name):
        return f"{self.prefix}:schedule:{name}"
