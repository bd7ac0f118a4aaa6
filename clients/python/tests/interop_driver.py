"""Drives the package for tests/interop.rs (Rust worker on the other side):

    interop_driver.py URL NAMESPACE QUEUE produce          # prints one job id per line
    interop_driver.py URL NAMESPACE QUEUE inspect ID...    # prints one JSON line per id: state, result, attempts
    interop_driver.py URL NAMESPACE QUEUE work N [SLEEP]   # works until N jobs completed (each sleeping SLEEP s),
                                                           # prints "completed N"; its handler returns
                                                           # {"by": "python", "n": payload["n"], "attempt": a}
    interop_driver.py URL NAMESPACE QUEUE hold LEASE       # works one job whose handler sleeps 3 s, then prints
                                                           # JSON: what the worker recorded and its lease failures
    interop_driver.py URL NAMESPACE QUEUE serve SECONDS    # works (and fires schedules) for SECONDS, prints
                                                           # "completed N"
    interop_driver.py URL NAMESPACE QUEUE fire-times JSON  # JSON: [[expr, tz, after_ms, n], ...]; prints the n
                                                           # fire times after after_ms of each, as a JSON list
    interop_driver.py URL NAMESPACE QUEUE add-schedule NAME (cron EXPR TZ | every MS)   # adds it (payload NAME)
"""

import threading
import time

import json
import sys

from support import rill  # noqa: F401  (puts the package on the path)


def main():
    url, ns, queue, cmd = sys.argv[1:5]
    q = rill.Client(url, namespace=ns).queue(queue)
    if cmd == "produce":
        ids = [
            q.enqueue({"to": "plain@example.com", "n": 0}),
            q.enqueue({"to": "named@example.com", "n": 1}, id="py-named", max_attempts=2),
            q.enqueue({"to": "tenant@example.com", "n": 2}, dedup_key="py-dedup", headers={"x-tenant": "acme"}),
            q.enqueue({"to": "later@example.com", "n": 3}, delay=0.3, timeout=30),
        ]
        dup = q.enqueue_outcome({"to": "again@example.com", "n": 9}, id="py-named")
        assert dup.duplicate and dup.id == "py-named", dup
        print("\n".join(ids))
    elif cmd == "inspect":
        for jid in sys.argv[5:]:
            info = q.job(jid)
            print(json.dumps({"id": jid, "state": info.state, "result": info.decoded_result(),
                              "attempts": info.attempts}))
    elif cmd == "fire-times":
        out = []
        for expr, tz, after, n in json.loads(sys.argv[5]):
            s, t, got = rill.Schedule.cron(expr, tz=tz), after, []
            for _ in range(n):
                t = s.next_after(t)
                got.append(t)
            out.append(got)
        print(json.dumps(out))
    elif cmd == "add-schedule":
        name, kind = sys.argv[5:7]
        s = (rill.Schedule.cron(sys.argv[7], tz=sys.argv[8]) if kind == "cron"
             else rill.Schedule.every(int(sys.argv[7]) / 1000))
        q.schedule(name, s, name)
    elif cmd == "serve":
        w = rill.Worker(rill.Client(url, namespace=ns), queue, lambda job: None, concurrency=4, block=0.2)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        time.sleep(float(sys.argv[5]))
        w.stop()
        t.join(timeout=60)
        print(f"completed {w.completed}")
    elif cmd in ("work", "hold"):
        n = int(sys.argv[5]) if cmd == "work" else 1
        pause = float(sys.argv[6]) if cmd == "work" and len(sys.argv) > 6 else (3.0 if cmd == "hold" else 0.0)
        returned = []

        def handler(job):
            time.sleep(pause)
            returned.append(job.id)
            return {"by": "python", "n": job.payload["n"], "attempt": job.attempt}

        lease = float(sys.argv[5]) if cmd == "hold" else 5.0
        w = rill.Worker(rill.Client(url, namespace=ns), queue, handler, concurrency=4, block=0.2, lease=lease)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        print("started", flush=True)
        deadline = time.time() + 60
        while time.time() < deadline and (w.completed < n if cmd == "work" else not returned):
            time.sleep(0.02)
        time.sleep(0.5 if cmd == "hold" else 0)
        w.stop()
        t.join(timeout=60)
        if cmd == "work":
            print(f"completed {w.completed}")
        else:
            print(json.dumps({"returned": returned, "completed": w.completed, "lease_failures": w.lease_failures}))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
