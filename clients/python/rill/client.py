"""``Client``: one Redis connection pool, the scripts loaded on it, and handles on queues."""

import threading

import redis as _redis

from . import keys as _keys
from .partition import Partitions
from .scripts import Scripts
from .wire import DEFAULT_MAX_PAYLOAD


class Client:
    """A rill client on ``url`` (``redis://``, ``rediss://`` or ``unix://``). Lazy: nothing connects until the first
    command. ``namespace`` is the first key segment (every rill client of a deployment must use the same one).

    >>> client = Client("redis://127.0.0.1:6379")
    >>> emails = client.queue("emails")
    """

    def __init__(self, url="redis://127.0.0.1:6379", namespace=_keys.DEFAULT_NAMESPACE,
                 max_payload=DEFAULT_MAX_PAYLOAD, redis=None):
        _keys.validate_name(namespace)
        self.namespace = namespace
        self.max_payload = max_payload
        self.redis = redis if redis is not None else _redis.Redis.from_url(url)
        self.scripts = Scripts(self.redis)
        self._listed = set()
        self._partitions = {}
        self._lock = threading.Lock()

    def queue(self, name):
        """A handle on queue ``name`` (checked, not created: a queue exists once it has keys)."""
        from .queue import Queue
        return Queue(self, _keys.QueueKeys(self.namespace, name))

    def list_queue(self, queue_keys):
        """Adds the queue to the namespace's queue list, once per client (SPEC.md section 8: operators list queues
        from it)."""
        with self._lock:
            if queue_keys.queue in self._listed:
                return
            self._listed.add(queue_keys.queue)
        self.redis.sadd(queue_keys.queues, queue_keys.queue)

    def partitions(self, queue_keys):
        """The queue's partitions (SPEC.md section 2a), None if it is not partitioned; read once per client (they
        never change once set)."""
        with self._lock:
            if queue_keys.queue in self._partitions:
                return self._partitions[queue_keys.queue]
        count, tags = self.redis.hmget(queue_keys.config, "partitions", "partition_tags")
        parts = Partitions.from_config(queue_keys.queue, count, tags)
        with self._lock:
            self._partitions[queue_keys.queue] = parts
        return parts

    def close(self):
        self.redis.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
