"""Small helpers the worker's parts share: replies as text and field lists, the clock."""

import time


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
