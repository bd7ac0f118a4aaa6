"""The Lua scripts this package ships (copies of the repository's ``lua/``; the tests fail if they differ), loaded
once per client and called by SHA with a fallback to EVAL, as redis-py's ``Script`` does."""

import os

_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua")


def source(name):
    with open(os.path.join(_DIR, name), encoding="utf-8") as f:
        return f.read()


class Scripts:
    """The scripts registered on one Redis client, by file name (``scripts["enqueue.lua"]``)."""

    def __init__(self, redis):
        self._redis = redis
        self._loaded = {}

    def __getitem__(self, name):
        s = self._loaded.get(name)
        if s is None:
            s = self._redis.register_script(source(name))
            self._loaded[name] = s
        return s
