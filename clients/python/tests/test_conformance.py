"""The shared conformance vectors (tests/vectors/) and the shipped scripts: this package builds the same key names,
refuses the same names and ids, reads the same CBOR, and its copies of the scripts are the repository's and give
every reply and state the vectors list."""

import json
import os
import re
import unittest

import cbor2

from support import REPO, RedisTest, rill

VECTORS = os.path.join(REPO, "tests", "vectors")
LUA = os.path.join(REPO, "lua")
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(rill.__file__)), "lua")


def load(name):
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return json.load(f)


def resolver(keys):
    per = {"job": keys.job, "checkpoints": keys.checkpoints, "dedup": keys.dedup, "worker": keys.worker,
           "schedule": keys.schedule, "level": lambda p: keys.level(int(p))}

    def key(name):
        if " " in name:
            kind, rest = name.split(" ", 1)
            return per[kind](rest)
        return getattr(keys, name)
    return key


@unittest.skipUnless(os.path.isdir(VECTORS), "tested outside the repository: no vectors")
class Vectors(RedisTest):
    def test_shipped_scripts_are_the_repositorys(self):
        names = sorted(f for f in os.listdir(LUA) if f.endswith(".lua"))
        self.assertEqual(sorted(f for f in os.listdir(SHIPPED) if f.endswith(".lua")), names)
        for n in names:
            with open(os.path.join(LUA, n), "rb") as a, open(os.path.join(SHIPPED, n), "rb") as b:
                self.assertEqual(a.read(), b.read(), f"clients/python/rill/lua/{n} differs from lua/{n}: copy it")

    def test_key_names_and_refused_names(self):
        v = load("keys.json")
        for q in v["queues"]:
            key = resolver(rill.QueueKeys(q["namespace"], q["queue"]))
            for section in ("keys", "per_name"):
                for name, want in q[section].items():
                    self.assertEqual(key(name), want, name)
        for r in v["refused_names"]:
            with self.assertRaises(rill.InvalidName, msg=r):
                rill.QueueKeys("ns", r["name"])
        for r in v["refused_job_ids"]:
            with self.assertRaises(rill.InvalidJobId, msg=r):
                self.client.queue("q").enqueue(1, id=r["id"])
        for jid in v["accepted_job_ids"]:
            self.assertEqual(self.client.queue("q").enqueue(1, id=jid), jid)

    def test_payloads(self):
        v = load("payloads.json")
        for case in v["payloads"] + v["other_encodings"]:
            self.assertEqual(rill.wire.decode(bytes.fromhex(case["cbor_hex"])), case["json"], case["note"])
            self.assertEqual(rill.wire.decode(rill.wire.encode(case["json"])), case["json"], case["note"])
        with self.assertRaises(rill.Protocol):
            rill.wire.decode(cbor2.dumps(1) + b"\x00")

    def test_refused_entries(self):
        """Each entry of entries-refused.jsonl is refused with its dead-letter reason and a message containing the
        vector's text, decoding payloads as the vectors' job type (a map with text `to` and unsigned 32-bit `n`)."""
        with open(os.path.join(VECTORS, "entries-refused.jsonl"), encoding="utf-8") as f:
            cases = [json.loads(line) for line in f if line.strip()]
        self.assertGreaterEqual(len(cases), 50)
        for case in cases:
            fields = [(_bytes(k), _bytes(v)) for k, v in case["fields"]]
            with self.assertRaises(rill.job.Refused, msg=case["note"]) as e:
                env = rill.job.parse_entry("1700000000000-0", fields)
                rill.job.decode_payload(env, _email)
            self.assertEqual(e.exception.reason, case["reason"], case["note"])
            self.assertIn(case["expect"], str(e.exception), case["note"])

    def test_script_calls(self):
        cases = load("scripts.json")["cases"]
        self.assertGreaterEqual(len(cases), 15)
        for i, case in enumerate(cases):
            name = f"{case['script']} ({case['note']})"
            key = resolver(rill.QueueKeys(self.namespace, f"v{i}"))
            arg = lambda s: _arg(key, s)  # noqa: E731
            for words in case["seed"]:
                self.r.execute_command(*[arg(w) for w in words])
            script = self.client.scripts[case["script"]]
            got = _json(script(keys=[arg(w) for w in case["keys"]], args=[arg(w) for w in case["argv"]]))
            self.assertTrue(_matches(arg, case["reply"], got), f"{name}: replied {got!r}, not {case['reply']!r}")
            for check in case["state"]:
                g = _json(self.r.execute_command(*[arg(w) for w in check[0]]))
                self.assertTrue(_matches(arg, check[1], g), f"{name}: {check[0]} gave {g!r}, not {check[1]!r}")


def _bytes(s):
    if s.startswith("hex:"):
        return bytes.fromhex(s[4:])
    if s.startswith("repeat:"):
        _, n, hh = s.split(":")
        return bytes.fromhex(hh) * int(n)
    return s.encode()


def _email(v):
    """The vectors' job type, as the Rust tests declare it: `struct Email { to: String, n: u32 }`."""
    if not isinstance(v, dict) or not isinstance(v.get("to"), str):
        raise ValueError("expected a map with text `to`")
    n = v.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2 ** 32:
        raise ValueError("expected an unsigned 32-bit `n`")
    return v


def _arg(key, s):
    if s.startswith("hex:"):
        return bytes.fromhex(s[4:])
    if s.startswith("{") and s.endswith("}"):
        return key(s[1:-1]).encode()
    return s.encode()


def _json(v):
    if v is None or isinstance(v, (int, str)):
        return int(v) if isinstance(v, bool) else v
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return "hex:" + v.hex()
    if isinstance(v, (list, tuple)):
        return [_json(x) for x in v]
    raise AssertionError(f"unexpected reply {v!r}")


_ID = re.compile(r"^\d+-\d+$")


def _matches(arg, want, got):
    if want == "<any>":
        return True
    if want == "<id>":
        return isinstance(got, str) and bool(_ID.match(got))
    if isinstance(want, str) and isinstance(got, str):
        return want == got or (want.startswith("{") and arg(want) == got.encode())
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(_matches(arg, w, g) for w, g in zip(want, got))
    return want == got


if __name__ == "__main__":
    unittest.main()
