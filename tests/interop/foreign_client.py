"""A client written from SPEC.md alone (redis-py + cbor2), used by tests/interop.rs.

usage: foreign_client.py URL NAMESPACE QUEUE enqueue N        -> prints one job id per line
       foreign_client.py URL NAMESPACE QUEUE results ID...    -> prints one JSON line per job
       foreign_client.py URL NAMESPACE QUEUE work N           -> claims and completes N jobs via lua/ack.lua
"""
import json
import os
import sys
import time

import cbor2
import redis

url, ns, queue, cmd = sys.argv[1:5]
r = redis.Redis.from_url(url)
prefix = f"{ns}:{{{queue}}}"
ready = f"{prefix}:ready"
GROUP = "workers"
LUA = os.path.join(os.path.dirname(__file__), "..", "..", "lua")

if cmd == "enqueue":
    for i in range(int(sys.argv[5])):
        payload = cbor2.dumps({"to": f"py{i}@example.com", "n": i})
        fields = {"v": "1", "payload": payload}
        if i % 2:
            fields["max_attempts"] = "3"
            fields["x-trace"] = "00-py-01"
        print(r.xadd(ready, fields).decode())

elif cmd == "results":
    for job_id in sys.argv[5:]:
        rec = r.hgetall(f"{prefix}:job:{job_id}")
        out = {"id": job_id, "state": rec.get(b"state", b"").decode()}
        if b"result" in rec:
            out["result"] = cbor2.loads(rec[b"result"])
        print(json.dumps(out))

elif cmd == "work":
    want = int(sys.argv[5])
    consumer = f"py-{os.getpid()}"
    ack = r.register_script(open(os.path.join(LUA, "ack.lua")).read())
    try:
        r.xgroup_create(ready, GROUP, id="0", mkstream=True)
    except redis.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    done = 0
    deadline = time.time() + 20
    while done < want and time.time() < deadline:
        got = r.xreadgroup(GROUP, consumer, {ready: ">"}, count=want - done, block=1000)
        for _stream, entries in got or []:
            keys = [ready, f"{prefix}:index", f"{prefix}:events", f"{prefix}:held"]
            # group, consumer, now ms, retention ms, events maxlen, keep-all flag, number of deliveries, lazy window,
            # XACKDEL wanted (the script uses it only where the server has it)
            argv = [GROUP, consumer, str(int(time.time() * 1000)), "60000", "100", "0", str(len(entries)), "1000", "1"]
            extras = []
            # XREADGROUP returns entries in ascending id order, as ack.lua wants them.
            for pos, (entry_id, fields) in enumerate(entries, start=1):
                entry_id = entry_id.decode()
                job_id = fields.get(b"id", entry_id.encode()).decode()
                data = cbor2.loads(fields[b"payload"])
                # entry id, token (the delivery count: 1 for a new entry)
                argv += [entry_id, "1"]
                # this job has a result: position, job id, attempt, result, touched, and its record and
                # checkpoint keys
                attempt = int(fields.get(b"attempts", b"0")) + 1
                result = cbor2.dumps({"by": "python", "n": data["n"]})
                extras += [str(pos), job_id, str(attempt), result, "0"]
                keys += [f"{prefix}:job:{job_id}", f"{prefix}:ckpt:{job_id}"]
            argv += extras
            n = len(entries)
            # SPEC: the count alone when every delivery completed, else one code per delivery
            codes = ack(keys=keys, args=argv)
            assert codes == n, codes
            done += n
    print(done)
else:
    sys.exit(f"unknown command {cmd}")
