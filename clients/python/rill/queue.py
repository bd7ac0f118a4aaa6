"""``Queue``: producing jobs and looking at them (SPEC.md sections 4, 6 and 8)."""

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional

from . import keys as _keys
from . import wire
from .errors import InvalidOption, NoSuchPriority, Protocol
from .schedule import Scheduling

DEFAULT_DEDUP_TTL = 24 * 3600.0
"""Seconds a chosen id or dedup key refuses a second job after the first enqueue (every rill producer: 24 h)."""

MAX_ATTEMPTS = 1_000_000
MAX_TIMEOUT_MS = 31_622_400_000
RECORD_RETENTION = 24 * 3600.0
"""Seconds a finished job's record is kept (every rill worker's default: 24 h)."""
STATE_SCAN = 200
"""Events ``state.lua`` scans for an unnamed job's ``completed`` event (as the Rust client)."""


def _seconds(d, what):
    if d is None:
        return None
    if isinstance(d, timedelta):
        d = d.total_seconds()
    if not isinstance(d, (int, float)) or d < 0:
        raise InvalidOption(what, "a duration is a non-negative number of seconds or a timedelta")
    return float(d)


def _now_ms():
    return int(time.time() * 1000)


@dataclass(frozen=True)
class EnqueueOutcome:
    """What an enqueue did: ``id`` is the job's id either way; ``duplicate`` when nothing was added because a job
    with that id or dedup key is live or was enqueued within the dedup TTL (``id`` is then that job's)."""

    id: str
    duplicate: bool


@dataclass(frozen=True)
class JobInfo:
    """Where a job is (``state.lua``): ``state`` is one of waiting, active, delayed, failed, parked, completed,
    cancelled, dead, unknown."""

    id: str
    state: str
    entry_id: str
    attempts: int
    owner: str
    deliveries: int
    finished_ms: int
    level: int
    result: Optional[bytes] = None
    error: Optional[str] = None

    def decoded_result(self):
        return None if self.result is None else wire.decode(self.result)


class Queue(Scheduling):
    """A handle on one queue: enqueue, ``state``, ``result``, ``counts``, limits, priorities and schedules."""

    def __init__(self, client, queue_keys):
        self.client = client
        self.keys = queue_keys
        self.redis = client.redis
        self._turn = int.from_bytes(os.urandom(2), "big")  # the partition the next id-less job goes to

    @property
    def name(self):
        return self.keys.queue

    # Producing

    def enqueue(self, payload, **options):
        """Adds a job with ``payload`` (any CBOR-encodable value) and returns its id. Options: ``id`` (a job id of
        your own), ``dedup_key``, ``dedup_ttl`` (seconds or timedelta; 24 h), ``delay`` (seconds or timedelta),
        ``run_at`` (datetime or epoch seconds), ``max_attempts``, ``timeout`` (per attempt), ``priority`` (a level of
        the queue's, 0 first), ``headers`` (``{"x-tenant": "acme"}``). An id or dedup key enqueued again returns
        the first job's id and adds nothing (see ``enqueue_outcome`` to tell)."""
        return self.enqueue_outcome(payload, **options).id

    def enqueue_outcome(self, payload, id=None, dedup_key=None, dedup_ttl=None, delay=None, run_at=None,
                        max_attempts=None, timeout=None, priority=0, headers=None):
        """As ``enqueue``, saying whether the job was added or was a duplicate."""
        if id is not None:
            _keys.validate_job_id(id)
        if dedup_key is not None:
            _keys.validate_job_id(dedup_key)
        if max_attempts is not None and not (isinstance(max_attempts, int) and 1 <= max_attempts <= MAX_ATTEMPTS):
            raise InvalidOption("max_attempts", "from 1 to 1,000,000")
        timeout_ms = None
        if timeout is not None:
            timeout_ms = wire.ms(_seconds(timeout, "timeout"))
            if not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
                raise InvalidOption("timeout", "from 1 ms to 366 days")
        if not isinstance(priority, int) or not 0 <= priority < _keys.LEVELS:
            raise InvalidOption("priority", "a level from 0 to 15")
        header_fields = _headers(headers)
        data = wire.encode(payload, self.client.max_payload)
        now = _now_ms()
        due = 0
        if delay is not None:
            due = now + wire.ms(_seconds(delay, "delay"))
        if run_at is not None:
            at = run_at.timestamp() if isinstance(run_at, datetime) else float(run_at)
            due = max(due, int(at * 1000))
        self.client.list_queue(self.keys)
        # A partitioned queue (SPEC.md section 2a): the job goes to the partition of its dedup key, else of its id;
        # one without an id gets a generated one, routed to the next partition in turn.
        k = self.keys
        generated = None
        parts = self.client.partitions(self.keys)
        if parts is not None:
            if dedup_key is not None or id is not None:
                index = parts.of_key(dedup_key if dedup_key is not None else id)
            else:
                self._turn += 1
                index = self._turn % len(parts)
            if id is None:
                generated = parts.id_in(index, now)
            k = self.keys.partition(parts.tags[index])
        plain = id is None and generated is None and dedup_key is None and due <= now and priority == 0
        if plain:
            # SPEC.md section 8: a plain job is one XADD; its entry id is its job id.
            fields = {"v": "1", "payload": data}
            if max_attempts is not None:
                fields["max_attempts"] = str(max_attempts)
            if timeout_ms is not None:
                fields["timeout_ms"] = str(timeout_ms)
            fields.update(header_fields)
            return EnqueueOutcome(_text(self.redis.xadd(k.ready, fields)), False)
        if id is not None:
            job_id = id
        elif generated is not None:
            job_id = generated
        elif dedup_key is None and due <= now:
            job_id = ""  # unnamed above level 0: its id is `<entry id>@<level>`
        else:
            job_id = os.urandom(16).hex()
        ttl = _seconds(dedup_ttl, "dedup_ttl")
        ttl_ms = 0
        if job_id and (id is not None or dedup_key is not None):
            ttl_ms = max(1, wire.ms(DEFAULT_DEDUP_TTL if ttl is None else ttl))
        fields = ["v", "1", "payload", data, "enqueued_ms", str(now)]
        if max_attempts is not None:
            fields += ["max_attempts", str(max_attempts)]
        if timeout_ms is not None:
            fields += ["timeout_ms", str(timeout_ms)]
        if priority > 0:
            fields += ["priority", str(priority)]
        for name, value in header_fields.items():
            fields += [name, value]
        script_keys = [k.level(priority), k.delayed, k.scheduled, k.index, k.dedup(dedup_key or job_id)]
        if priority > 0:
            script_keys.append(k.priorities)
        code, value = self.client.scripts["enqueue.lua"](
            keys=script_keys, args=[job_id, ttl_ms, due if due > now else 0, now] + fields)
        if code in (1, 2):
            return EnqueueOutcome(_text(value), False)
        if code == 0:
            return EnqueueOutcome(_text(value), True)
        if code == -1:
            raise NoSuchPriority(priority, int(value))
        raise Protocol("enqueue.lua", f"unknown code {code!r}")

    def enqueue_many(self, payloads, chunk=1000):
        """Adds plain jobs, pipelined ``chunk`` at a time; returns their ids in order."""
        data = [wire.encode(p, self.client.max_payload) for p in payloads]
        if self.client.partitions(self.keys) is not None:
            # Each job through its partition's enqueue.lua (it needs an id there).
            return [self.enqueue(p) for p in payloads]
        self.client.list_queue(self.keys)
        ids = []
        for i in range(0, len(data), chunk):
            pipe = self.redis.pipeline(transaction=False)
            for d in data[i:i + chunk]:
                pipe.xadd(self.keys.ready, {"v": "1", "payload": d})
            ids += [_text(x) for x in pipe.execute()]
        return ids

    def set_priorities(self, levels, weights=None):
        """Gives the queue ``levels`` priority levels (1 to 16; 0 is taken first), read strictly in order, or
        with ``weights`` (one per level) each read starts at a level picked in proportion to its weight.
        Refused with ``InvalidOption`` while a level that would go holds a job."""
        if weights is not None:
            levels = len(weights)
            if levels < 2 or any((not isinstance(w, int)) or w < 1 for w in weights):
                raise InvalidOption("weights", "2 to 16 positive integers, one per level")
        if not isinstance(levels, int) or not 1 <= levels <= _keys.LEVELS:
            raise InvalidOption("levels", "1 to 16")
        k = self.keys
        code, level = self.client.scripts["levels.lua"](
            keys=[k.priorities] + [k.level(p) for p in range(1, _keys.LEVELS)],
            args=[_keys.GROUP, levels, ",".join(map(str, weights)) if weights else ""])
        if code != 1:
            raise InvalidOption("levels", f"level {level} still holds a job")

    # Limits (SPEC.md sections 6f and 6h): every worker of the queue follows them within about a second.

    def set_rate_limit(self, max_starts, per):
        """At most ``max_starts`` job starts in any window of ``per`` seconds, across all workers."""
        per_ms = wire.ms(_seconds(per, "per"))
        if not isinstance(max_starts, int) or max_starts < 1 or per_ms < 1:
            raise InvalidOption("rate limit", "needs at least 1 job per at least 1 ms")
        self.redis.hset(self.keys.limit, mapping={"rate": max_starts, "period_ms": per_ms})

    def clear_rate_limit(self):
        self.redis.hdel(self.keys.limit, "rate", "period_ms", "used")
        self.redis.delete(self.keys.limit_starts)

    def set_default_timeout(self, limit):
        """The queue's default limit on one attempt (seconds or timedelta) of a job without its own; None removes
        it. Workers read it when they start; one given its own ``timeout`` keeps that."""
        ms = wire.ms(_seconds(limit, "timeout")) if limit is not None else 0
        if ms > 0:
            self.redis.hset(self.keys.config, "timeout_ms", ms)
        else:
            self.redis.hdel(self.keys.config, "timeout_ms")

    def set_concurrency_limit(self, most):
        """At most ``most`` jobs handed out and not finished at once, across all workers."""
        if not isinstance(most, int) or most < 1:
            raise InvalidOption("concurrency limit", "at least 1")
        self.redis.hset(self.keys.limit, "concurrency", most)

    def clear_concurrency_limit(self):
        self.redis.hdel(self.keys.limit, "concurrency")

    def set_key_limit(self, field, rate=None, per=None, concurrency=None):
        """Limits each key, the value of header ``field`` (``x-tenant``): at most ``rate`` starts per ``per``
        seconds and/or ``concurrency`` running at once per key; keys with a backlog take turns."""
        if not isinstance(field, str) or not field.startswith("x-") or len(field) < 3:
            raise InvalidOption("key limit", "the field is a header name starting with x-")
        if rate is None and concurrency is None:
            raise InvalidOption("key limit", "needs a rate, a concurrency or both")
        fields = {"key_field": field}
        drop = []
        if rate is not None:
            per_ms = wire.ms(_seconds(per, "per") if per is not None else -1)
            if not isinstance(rate, int) or rate < 1 or per_ms < 1:
                raise InvalidOption("key limit", "a rate needs at least 1 job per at least 1 ms")
            fields.update(key_rate=rate, key_period_ms=per_ms)
        else:
            drop += ["key_rate", "key_period_ms"]
        if concurrency is not None:
            if not isinstance(concurrency, int) or concurrency < 1:
                raise InvalidOption("key limit", "a concurrency needs at least 1 job")
            fields["key_concurrency"] = concurrency
        else:
            drop.append("key_concurrency")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.limit, mapping=fields)
        if drop:
            pipe.hdel(self.keys.limit, *drop)
        pipe.execute()

    def clear_key_limit(self):
        """Removes the per-key limits; jobs they hold back are then handed out in turn."""
        self.redis.hdel(self.keys.limit, "key_field", "key_rate", "key_period_ms", "key_concurrency")

    # Steering (SPEC.md section 6b)

    def signal(self, kind, target="queue", payload=None, sender="python"):
        """Sends signal ``kind`` (pause, resume, quiet, stop, cancel, custom:<name>) to ``target`` (``queue``,
        ``worker:<consumer>``, ``job:<id>``). Returns ``(signal id, code)``: 1 applied by the queue itself (a
        queue pause or resume; a job cancelled, parked or resumed before it ran), 2 left to the workers (a running
        job, quiet, stop, custom), 0 ignored."""
        k = self.keys
        if target.startswith("job:"):
            # On a partitioned queue the job's partition applies it; what is left for workers is copied to
            # partition 0's signals stream, which they follow (SPEC.md section 2a).
            k = self._holder(target[4:])
        job_key = k.job(target[4:]) if target.startswith("job:") else k.paused
        data = b"" if payload is None else wire.encode(payload, self.client.max_payload)
        now = _now_ms()
        sid, code = self.client.scripts["signal.lua"](
            keys=[k.signals, k.outcomes, k.paused, k.ready, k.delayed, k.scheduled, k.index, job_key, k.parked]
            + k.level_tail(),
            args=[kind, target, sender, now, data, 10_000, _keys.GROUP, wire.ms(RECORD_RETENTION)])
        if k is not self.keys and int(code) == 2:
            self.redis.xadd(self.keys.signals, {"kind": kind, "target": target, "sender": sender, "ms": now,
                                                "payload": data}, maxlen=10_000, approximate=True)
        return _text(sid), int(code)

    def cancel(self, job_id):
        """Cancels a job: removed at once if it has not started, else its worker stops it (``job.cancelled``) and
        records it cancelled. Returns the signal's code (see ``signal``)."""
        return self.signal("cancel", f"job:{job_id}")[1]

    def pause(self):
        """Stops every worker of the queue from taking jobs (kept across restarts) until ``resume``."""
        self.signal("pause")

    def resume(self):
        self.signal("resume")

    def is_paused(self):
        return bool(self.redis.exists(self.keys.paused))

    # Looking

    def _partitions(self):
        """The keys of each partition (SPEC.md section 2a), partition 0 first; just this queue's when it is not
        partitioned."""
        parts = self.client.partitions(self.keys)
        return [self.keys] if parts is None else [self.keys.partition(t) for t in parts.tags]

    def _search(self, job_id):
        """The partitions' keys in the order to look for ``job_id``: the one its id routes to first."""
        parts = self.client.partitions(self.keys)
        if parts is None:
            return [self.keys]
        first = parts.of_key(job_id)
        return [self.keys.partition(t) for t in parts.tags[first:] + parts.tags[:first]]

    def _holder(self, job_id):
        """The keys of the partition that holds ``job_id`` (the one its id routes to when none has it)."""
        order = self._search(job_id)
        return next((k for k in order if self._job_in(k, job_id).state != "unknown"), order[0])

    def job(self, job_id):
        """Where job ``job_id`` is now, with its result once completed (``JobInfo``)."""
        first = None
        for k in self._search(job_id):
            info = self._job_in(k, job_id)
            if info.state != "unknown":
                return info
            first = first or info
        return first

    def _job_in(self, k, job_id):
        row = self.client.scripts["state.lua"](
            keys=[k.index, k.delayed, k.scheduled, k.ready, k.job(job_id), k.dead_index, k.parked, k.events,
                  k.dead] + k.level_tail(),
            args=[_keys.GROUP, job_id, STATE_SCAN])
        if not isinstance(row, list) or len(row) < 6:
            raise Protocol("state.lua", f"reply {row!r}")
        state = _text(row[0])
        result = error = None
        if state == "completed":
            result = self.redis.hget(k.job(job_id), "result")
        if state == "dead":
            error = _dead_error(self.redis, k.dead, _text(row[1]))
        return JobInfo(id=job_id, state=state, entry_id=_text(row[1]), attempts=int(row[2]), owner=_text(row[3]),
                       deliveries=int(row[4]), finished_ms=int(row[5]), level=int(row[6]) if len(row) > 6 else 0,
                       result=result, error=error)

    def wait(self, job_id, timeout=60.0):
        """Waits until job ``job_id`` ends (completed, dead, cancelled, or unknown) or ``timeout`` seconds pass, and
        returns its ``JobInfo`` then (``info.state`` says which; ``info.decoded_result()`` its result). One
        blocking read per queue and client serves every waiter (SPEC.md section 7)."""
        import time as _time
        from .wait import ENDED, RECHECK, follower
        f = follower(self.client, self._holder(job_id).events)
        ended = f.expect(job_id)
        try:
            deadline = _time.monotonic() + _seconds(timeout, "timeout")
            while True:
                info = self.job(job_id)
                left = deadline - _time.monotonic()
                if info.state in ENDED or left <= 0:
                    return info
                ended.wait(min(RECHECK, left))
        finally:
            f.forget(job_id, ended)

    def state(self, job_id):
        """The job's state: waiting, active, delayed, failed, parked, completed, cancelled, dead or unknown."""
        return self.job(job_id).state

    def result(self, job_id):
        """The decoded result of a completed job (``None``: not completed, no result, or its record expired)."""
        return self.job(job_id).decoded_result()

    def counts(self):
        """``{"waiting", "active", "delayed", "dead", "parked"}``: waiting and active summed over priority levels,
        jobs held back by per-key limits counted as waiting."""
        total = {}
        for k in self._partitions():
            for name, n in self._counts_in(k).items():
                total[name] = total.get(name, 0) + n
        return total

    def _counts_in(self, k):
        levels = int(self.redis.hget(k.priorities, "levels") or 1)
        out = {"waiting": int(self.redis.zcard(k.held)), "active": 0, "delayed": int(self.redis.zcard(k.delayed)),
               "dead": int(self.redis.xlen(k.dead)), "parked": int(self.redis.zcard(k.parked))}
        for level in range(max(1, min(levels, _keys.LEVELS))):
            stream = k.level(level)
            try:
                groups = self.redis.xinfo_groups(stream)
            except Exception:  # no stream yet: nothing waits there
                continue
            g = next((g for g in groups if _text(g.get("name")) == _keys.GROUP), None)
            if g is None:
                out["waiting"] += int(self.redis.xlen(stream))
                continue
            out["active"] += int(g.get("pending") or 0)
            lag = g.get("lag")
            if lag is None:  # Redis cannot tell after some deletions: count what lies after the group
                last = _text(g.get("last-delivered-id"))
                lag = len(self.redis.xrange(stream, min="(" + last, max="+", count=10000))
            out["waiting"] += int(lag)
        return out


def _headers(headers):
    out = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not name.startswith("x-") or len(name) < 3 or len(name) > 128:
            raise InvalidOption("header", f"{name!r}: a header name starts with x- and is at most 128 bytes")
        out[name] = value if isinstance(value, bytes) else str(value).encode()
    return out


def _dead_error(r, dead, entry_id):
    if not entry_id:
        return None
    got = r.xrange(dead, min=entry_id, max=entry_id)
    if not got:
        return None
    return _text(got[0][1].get(b"dead_error")) or None


def _text(v: Any):
    if v is None:
        return ""
    return v.decode() if isinstance(v, bytes) else str(v)
