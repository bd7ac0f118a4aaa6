#!/usr/bin/env python3
"""Redis-side cost of single script calls, from INFO commandstats (usec per EVALSHA), on a private redis-server.

    python3 benches/script_costs.py [path/to/redis-server]

Measures state.lua looking a job up by its `completed` event (500 events of 64 ids seeded: absent, just
completed, stopping at once) and heartbeat.lua with and without the `running` field. Needs redis-py
(Debian: python3-redis). Figures are per call, Redis's own time (no round trip).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else shutil.which("redis-server")
    d = tempfile.mkdtemp()
    port = 16000 + os.getpid() % 2000
    srv = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d],
                           stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        run(redis.Redis(port=port))
    finally:
        srv.kill()
        shutil.rmtree(d, ignore_errors=True)


def run(r):
    key = lambda s: "m:{q}:" + s
    state = r.register_script(open(os.path.join(ROOT, "lua", "state.lua")).read())
    beat = r.register_script(open(os.path.join(ROOT, "lua", "heartbeat.lua")).read())
    r.xgroup_create(key("ready"), "workers", id="0", mkstream=True)
    for e in range(500):
        ids = " ".join(f"{1000 + e}-{i}" for i in range(64))
        r.xadd(key("events"), {"event": "completed", "ids": ids, "count": 64, "ms": 1000 + e})
    keys = [key(k) for k in ["index", "delayed", "scheduled", "ready", "job:x", "dead:index", "parked", "events"]]
    newest = r.xrevrange(key("events"), count=1)[0][0].decode()
    now_ms = int(newest.split("-")[0])

    def measure(label, call, n):
        r.config_resetstat()
        for _ in range(n):
            call()
        s = r.info("commandstats")["cmdstat_evalsha"]
        print(f"{label}: {s['usec'] / s['calls']:.1f} us per call ({s['calls']} calls)")

    measure("state.lua, an entry id older than every event (reads all 200 events)",
            lambda: state(keys=keys, args=["workers", "999999-0", 200]), 1000)
    measure("state.lua, found in the newest event",
            lambda: state(keys=keys, args=["workers", "1499-5", 200]), 2000)
    measure("state.lua, an entry id newer than every event (stops at once)",
            lambda: state(keys=keys, args=["workers", f"{now_ms + 1}-0", 200]), 2000)
    measure("state.lua, a named job without a record (no scan)",
            lambda: state(keys=keys, args=["workers", "order-42", 200]), 2000)
    bk = [key("workers"), key("worker:w1"), key("heartbeats")]
    per = ["status", "busy", "reason", "", "in_flight", "4", "processed", "100", "failed", "0", "lease_failures", "0"]
    running = ["running", " ".join(f"17962235{i}0005:order-{i}" for i in range(4))]
    beat(keys=bk, args=["w1", 0, 10000, 86400000, 6] + per + running + ["host", "h", "pid", "1"])
    for _ in range(2):
        measure("heartbeat.lua without running", lambda: beat(keys=bk, args=["w1", 0, 10000, 86400000, 6] + per), 3000)
        measure("heartbeat.lua with running (4 jobs)",
                lambda: beat(keys=bk, args=["w1", 0, 10000, 86400000, 6] + per + running), 3000)


if __name__ == "__main__":
    main()
