"""Small helpers the worker's parts share: replies as text and field lists, the clock."""

import time

import redis as _redis


def pairs(flat):
    if flat is None:
        return None
    if isinstance(flat, dict):  # a client that folded the fields: take them as they are
        return list(flat.items())
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def now_ms():
    return int(time.time() * 1000)


def dedicated(redis, socket_timeout):
    """A connection of its own for a blocking read, like ``redis``'s, with a read timeout above the block time
    (SPEC.md section 9, step 2)."""
    pool = redis.connection_pool
    kw = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_class"}
    kw["socket_timeout"] = socket_timeout
    return _redis.Redis(connection_pool=_redis.ConnectionPool(connection_class=pool.connection_class, **kw))
