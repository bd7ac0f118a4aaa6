"""A private redis-server per test class (free port, temp dir, killed at the end): tests never touch a shared
Redis. ``RILL_TEST_REDIS_SERVER`` picks the binary (default: redis-server on PATH)."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import redis  # noqa: E402

import rill  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
"""The repository root, when the package is tested in place (its ``lua/`` and ``tests/vectors/``)."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self):
        binary = os.environ.get("RILL_TEST_REDIS_SERVER") or shutil.which("redis-server")
        if not binary:
            raise unittest.SkipTest("no redis-server on PATH")
        self.dir = tempfile.mkdtemp(prefix="rill-py-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}"
        deadline = time.time() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisTest(unittest.TestCase):
    """One private Redis per class; each test gets its own namespace and client."""

    @classmethod
    def setUpClass(cls):
        cls.server = RedisServer()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def setUp(self):
        self.namespace = "t" + uuid.uuid4().hex[:12]
        self.client = rill.Client(self.server.url, namespace=self.namespace)
        self.r = self.client.redis

    def tearDown(self):
        self.client.close()
