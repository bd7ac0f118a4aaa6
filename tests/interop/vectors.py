"""Runs rill's conformance vectors (tests/vectors/) from Python, knowing only SPEC.md and the vector files: key
names, refused names, CBOR payloads, and script calls on seeded state (the scripts loaded from lua/ as shipped).

    python3 vectors.py REDIS_URL NAMESPACE [--show]

--show prints each script case's actual reply and state instead of checking them (for writing new cases).
Exits non-zero with the first mismatch."""

import json
import os
import re
import sys

import cbor2
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VECTORS = os.path.join(ROOT, "tests", "vectors")
NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def load(name):
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return json.load(f)


def keys(ns, queue):
    """SPEC.md section 1, written here from the spec."""
    p = f"{ns}:{{{queue}}}"
    k = {name: f"{p}:{name}" for name in
         ["ready", "delayed", "scheduled", "index", "dead", "events", "signals", "paused", "parked", "workers",
          "heartbeats", "schedules", "limit", "priorities"]}
    k["dead_index"] = f"{p}:dead:index"
    k["outcomes"] = f"{p}:signals:outcomes"
    k["limit_starts"] = f"{p}:limit:starts"
    k["held"] = f"{p}:held"
    for name in ["ring", "queued", "running", "starts"]:
        k[f"key_{name}"] = f"{p}:keys:{name}"
    k["queues"] = f"{ns}:queues"
    per = {"job": "job", "checkpoints": "ckpt", "dedup": "dedup", "worker": "worker", "schedule": "schedule",
           "level": "ready"}

    def key(name):
        if name in k:
            return k[name]
        kind, _, rest = name.partition(" ")
        return f"{p}:{per[kind]}:{rest}"
    return key


def valid_name(name):
    return bool(NAME.match(name))


def valid_job_id(jid):
    return 0 < len(jid.encode()) <= 256 and not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in jid)


def check_keys():
    v = load("keys.json")
    for q in v["queues"]:
        key = keys(q["namespace"], q["queue"])
        for section in ("keys", "per_name"):
            for name, want in q[section].items():
                assert key(name) == want, (name, key(name), want)
    for r in v["refused_names"]:
        assert not valid_name(r["name"]), r
    for r in v["refused_job_ids"]:
        assert not valid_job_id(r["id"]), r
    for jid in v["accepted_job_ids"]:
        assert valid_job_id(jid), jid


def check_payloads():
    v = load("payloads.json")
    for case in v["payloads"] + v["other_encodings"]:
        got = cbor2.loads(bytes.fromhex(case["cbor_hex"]))
        assert got == case["json"], (case["note"], got)
        # What this client writes need not be the same bytes, but must read back the same.
        assert cbor2.loads(cbor2.dumps(case["json"])) == case["json"], case["note"]


def arg(key, s):
    if s.startswith("hex:"):
        return bytes.fromhex(s[4:])
    if s.startswith("{") and s.endswith("}"):
        return key(s[1:-1]).encode()
    return s.encode()


def to_json(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return "hex:" + v.hex()
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    raise AssertionError(f"unexpected reply {v!r}")


ID = re.compile(r"^\d+-\d+$")


def matches(key, want, got):
    if want == "<any>":
        return True
    if want == "<id>":
        return isinstance(got, str) and bool(ID.match(got))
    if isinstance(want, str) and isinstance(got, str):
        return want == got or (want.startswith("{") and arg(key, want) == got.encode())
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(matches(key, w, g) for w, g in zip(want, got))
    return want == got


def check_scripts(url, ns, show):
    r = redis.Redis.from_url(url)
    for i, case in enumerate(load("scripts.json")["cases"]):
        name = f"{case['script']} ({case['note']})"
        key = keys(ns, f"v{i}")
        for words in case["seed"]:
            r.execute_command(*[arg(key, w) for w in words])
        with open(os.path.join(ROOT, "lua", case["script"]), encoding="utf-8") as f:
            source = f.read()
        ks = [arg(key, w) for w in case["keys"]]
        argv = [arg(key, w) for w in case["argv"]]
        got = to_json(r.eval(source, len(ks), *ks, *argv))
        states = [(check[0], to_json(r.execute_command(*[arg(key, w) for w in check[0]])))
                  for check in case["state"]]
        if show:
            print(json.dumps({"case": name, "reply": got, "state": [[c, g] for c, g in states]}))
            continue
        assert matches(key, case["reply"], got), f"{name}: replied {got!r}, the vector says {case['reply']!r}"
        for (cmd, g), check in zip(states, case["state"]):
            assert matches(key, check[1], g), f"{name}: {cmd} gave {g!r}, the vector says {check[1]!r}"


def main():
    url, ns = sys.argv[1], sys.argv[2]
    show = "--show" in sys.argv[3:]
    check_keys()
    check_payloads()
    check_scripts(url, ns, show)
    print("vectors ok")


if __name__ == "__main__":
    main()
