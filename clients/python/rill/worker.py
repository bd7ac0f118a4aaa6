"""``Worker``: runs a queue's jobs with threads, by SPEC.md section 9: claim with XREADGROUP, check each entry,
renew leases on a timer the handlers cannot starve, finish through the fenced scripts (a delivery someone else
took over writes nothing), take back stalled jobs, promote due ones, hand back what is left at shutdown.

It beats every second into the worker registry (SPEC.md section 6c), so operators see it (``rill workers``) and
other workers adopt its jobs within seconds if it dies; it adopts the workers its beats list as crashed.

It follows the queue's signals (SPEC.md section 6b): ``cancel job:<id>`` fires that job's ``cancelled`` event (a
handler that then raises ends the job as cancelled), ``pause``/``resume`` of the queue, ``quiet`` and ``stop`` of
the queue or this worker; it answers each with an outcome.

A handler saves progress with ``job.checkpoint(state)`` and resumes with ``job.resume()`` (SPEC.md section 6a).

Priority levels (SPEC.md section 6g) are read level by level, strictly or weighted, and every later step runs
on the stream of the delivery's level.

A queue's rate, concurrency and per-key limits (SPEC.md sections 6f and 6h) are followed by reading through
``limit.lua``.

Not yet in this client: sessions (``pause job:<id>`` of a running job is ignored, with an outcome saying
so)."""

import logging
import os
import random
import socket
import threading
import time
import traceback

import redis as _redis

from . import wire
from .errors import InvalidOption, Permanent, Retry, RillError
from .job import Delivery, Job, Refused, decode_payload, job_id_of, parse_entry
from .keys import GROUP

log = logging.getLogger("rill.worker")

DEFAULT_LEASE = 5.0
CRASH_AFTER_MS = 3000
RECORD_TTL_MS = 24 * 3600 * 1000
CHECKPOINT_KEEP = 10
CHECKPOINT_TTL_MS = 7 * 24 * 3600 * 1000
CHECKPOINT_MAX = 1024 * 1024
HEARTBEATS_MAXLEN = 10_000
RETENTION = 24 * 3600.0
EVENTS_MAXLEN = 10_000


class Worker:
    """Runs ``handler(job)`` for the jobs of ``queue``, up to ``concurrency`` at once, each in its own thread.

    The handler returns the job's result (any CBOR value; ``None``: none), raises ``rill.Retry(msg, after=s)``
    to retry (after ``s`` seconds, else the backoff), ``rill.Permanent(msg)`` to dead-letter it now, or any other
    exception to retry with backoff until ``max_attempts`` (the job's own, else this default).

        worker = rill.Worker(client, "emails", send, concurrency=16)
        worker.run()           # until worker.stop() from another thread, or Ctrl-C
    """

    def __init__(self, client, queue, handler, concurrency=8, lease=DEFAULT_LEASE, max_attempts=5,
                 backoff=1.0, max_backoff=3600.0, block=2.0, timeout=None, decode=None, retention=RETENTION,
                 events_maxlen=EVENTS_MAXLEN, consumer=None, reclaim_every=1.0):
        if concurrency < 1:
            raise InvalidOption("concurrency", "at least 1")
        self.client = client
        self.queue = client.queue(queue)
        self.keys = self.queue.keys
        self.handler = handler
        self.concurrency = concurrency
        self.lease = float(lease)
        self.max_attempts = max_attempts
        self.backoff, self.max_backoff = backoff, max_backoff
        self.block = block
        self.timeout = timeout
        self.decode = decode
        self.retention_ms = wire.ms(retention)
        self.events_maxlen = events_maxlen
        self.reclaim_every = reclaim_every
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.scripts = client.scripts
        self.r = client.redis
        self._slots = threading.Semaphore(concurrency)
        self._held = {}  # entry id -> Delivery
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._paused = False
        self._quiet = False
        self._threads = []
        self.completed = self.failed = self.dead = 0
        self.lease_failures = 0
        self._registered = False
        self._crashed = []
        self._started_ms = _now_ms()
        self._lease_failures_beaten = 0
        self._beat_landed = time.monotonic()  # when the last beat that landed was sent
        self._release_until = 0.0  # after a read was given up on, release what Redis assigns us late

    # Running

    def run(self):
        """Works jobs until ``stop()`` (or KeyboardInterrupt); then waits for running jobs and hands back the
        rest."""
        self._start()
        fetch = self._fetch_connection()
        try:
            while not self._stopping.is_set():
                free = 0 if self._paused or self._quiet else self._free()
                if free == 0:
                    time.sleep(0.005)
                    continue
                try:
                    got = self._read_limited(fetch, free) if self._limited else self._read(fetch, free)
                except _redis.ResponseError as e:
                    if "NOGROUP" in str(e):
                        self._create_group()
                        continue
                    raise
                except (_redis.ConnectionError, _redis.TimeoutError) as e:
                    log.warning("rill: read failed (%s); retrying", e)
                    # Redis may still run that read later and assign us entries nobody runs (SPEC.md section 9,
                    # step 6): look for them for a minute.
                    self._release_until = time.monotonic() + 60
                    time.sleep(0.5)
                    continue
                for stream, entries in got:
                    if self._paused or self._quiet or self._stopping.is_set():
                        # A read that was blocked when the queue paused: hand its entries back, uncounted.
                        self._release(stream, [(_text(eid), 1) for eid, _ in entries])
                        continue
                    for eid, flat in entries:
                        self._dispatch(stream, _text(eid), _pairs(flat), 1)
        except KeyboardInterrupt:
            pass
        finally:
            self._stopping.set()
            self._shutdown()
            fetch.close()

    def stop(self):
        """Asks ``run`` to stop claiming and return once running jobs are done."""
        self._stopping.set()

    def _start(self):
        levels, weights = self.r.hmget(self.keys.priorities, "levels", "weights")
        self._set_levels(_text(levels or b""), _text(weights or b""))
        self._create_group()
        self.r.hsetnx(self.keys.config, "lease_ms", wire.ms(self.lease))
        stored = self.r.hget(self.keys.config, "lease_ms")
        if stored:
            self.lease = int(stored) / 1000
        limits = self.r.hmget(self.keys.limit, "rate", "concurrency", "key_field")
        self._limited = any(limits) or bool(self.r.zcard(self.keys.held))
        self._paused = bool(self.r.exists(self.keys.paused))
        newest = self.r.xrevrange(self.keys.signals, count=1)
        self._signals_after = _text(newest[0][0]) if newest else "0-0"
        for target in (self._maintain, self._listen, self._watch):
            t = threading.Thread(target=target, name=f"rill-{target.__name__.strip('_')}", daemon=True)
            t.start()
            self._threads.append(t)

    def _create_group(self):
        for stream in self._streams():
            try:
                self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except _redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    # Priority levels (SPEC.md section 6g): level p is the stream <P>:ready:<p>, level 0 the ready stream.

    def _set_levels(self, levels, weights):
        n = max(1, min(int(levels or 1), 16))
        w = [int(x) for x in weights.split(",")] if weights else None
        if w is not None and len(w) != n:
            w = None
        if (n, w) != (getattr(self, "_levels", None), getattr(self, "_weights", None)):
            self._levels, self._weights, self._credits = n, w, [0] * n
            return True
        return False

    def _streams(self):
        return [self.keys.level(p) for p in range(self._levels)]

    def _suffix(self, stream):
        return "" if stream == self.keys.ready else "@" + stream.rsplit(":", 1)[1]

    def _order(self):
        """The levels' streams in the order to read them: strictly by level, or (weighted) starting at the level
        smooth weighted round-robin picks, then the others in level order."""
        streams = self._streams()
        if not self._weights:
            return streams
        total = sum(self._weights)
        for i, w in enumerate(self._weights):
            self._credits[i] += w
        first = max(range(len(streams)), key=lambda i: (self._credits[i], -i))
        self._credits[first] -= total
        return [streams[first]] + [s for i, s in enumerate(streams) if i != first]

    def _read_limited(self, conn, free):
        """Up to ``free`` new entries through ``limit.lua`` (SPEC.md sections 6f and 6h: it reads and counts in one
        step); with none, waits without a busy loop for what the script says: a start allowed by the rate, a job
        ending somewhere (an event), a new entry, or a key's turn."""
        order = self._order()
        k = self.keys
        limited, read, wait, after = self.scripts["limit.lua"](
            keys=[k.limit, k.limit_starts, order[0], k.events, k.held, k.key_ring, k.key_queued, k.key_running,
                  k.key_starts] + order[1:],
            args=[GROUP, self.consumer, free])
        wait = _text(wait)
        if int(limited) == 0:
            self._limited = False
            return []
        if wait == "":
            return [(_text(stream), entries) for stream, entries in read]
        if wait == "again":
            return []
        if wait == "rate":
            self._stopping.wait(int(after) / 1000)
            return []
        block = wire.ms(self.block)
        if wait == "room":
            streams, ids, block = [k.events], [_text(after)], min(block, 1000)
        elif wait == "entries":
            streams, ids = order, [_text(a) for a in after]
        elif wait == "keys":
            ids = [_text(a) for a in after]
            wake = int(ids.pop())
            streams, block = [k.events] + order, min(block, 1000, wake or 1000)
        else:
            raise RillError(f"limit.lua answered the wait {wait!r}")
        conn.xread(dict(zip(streams, ids)), count=1, block=max(1, block))
        return []

    def _read(self, conn, free):
        """Up to ``free`` new entries, as [(stream, entries)]: each level in order without blocking, then, with
        nothing anywhere, one blocking read on all of them (its excess beyond ``free`` is handed back)."""
        order = self._order()
        if len(order) == 1:
            got = conn.execute_command("XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", free, "BLOCK",
                                       wire.ms(self.block), "STREAMS", order[0], ">")
            return [(_text(s), e) for s, e in got or []]
        out, left = [], free
        for stream in order:
            got = conn.execute_command("XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", left, "STREAMS",
                                       stream, ">")
            for s, entries in got or []:
                out.append((_text(s), entries))
                left -= len(entries)
            if left <= 0:
                return out
        if out:
            return out
        got = conn.execute_command("XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", free, "BLOCK",
                                   wire.ms(self.block), "STREAMS", *order, *([">"] * len(order)))
        left = free
        for s, entries in got or []:
            s = _text(s)
            keep, extra = entries[:max(0, left)], entries[max(0, left):]
            left -= len(keep)
            if keep:
                out.append((s, keep))
            if extra:
                self._release(s, [(_text(eid), 1) for eid, _ in extra])
        return out

    def _fetch_connection(self):
        kw = dict(self.r.connection_pool.connection_kwargs)
        kw["socket_timeout"] = self.block + 5  # above the block time (SPEC.md section 9, step 2)
        kw.pop("connection_class", None)
        conn = _redis.Redis(connection_pool=_redis.ConnectionPool(
            connection_class=self.r.connection_pool.connection_class, **kw))
        # The raw field list: a dictionary would hide a field given twice (SPEC.md section 3).
        conn.set_response_callback("XREADGROUP", lambda r, **kw: r)
        return conn

    def _free(self):
        with self._lock:
            return max(0, self.concurrency - len(self._held))

    # One delivery

    def _dispatch(self, stream, eid, fields, token):
        d = None
        suffix = self._suffix(stream)
        try:
            env = parse_entry(eid, fields, self.client.max_payload, suffix)
            d = Delivery(self, stream, env, token, env.max_attempts or self.max_attempts)
            payload = decode_payload(env, self.decode)
        except Refused as e:
            self._dead_letter_refused(stream, eid, fields, token, e)
            return
        d.address = eid + suffix  # entry ids repeat across level streams
        d.renewed = time.monotonic()
        d.started_ms = _now_ms()
        with self._lock:
            self._held[d.address] = d
        t = threading.Thread(target=self._run_one, args=(d, payload), name=f"rill-job-{eid}", daemon=True)
        t.start()

    def _run_one(self, d, payload):
        job = Job(d, payload)
        timers = []
        limit = d.envelope.timeout_ms / 1000 if d.envelope.timeout_ms else self.timeout
        outcome = None
        if limit:
            # At the deadline the handler is asked to stop; shortly after, the attempt fails whether or not it
            # returned, and its slot and lease go (a Python thread cannot be killed: a late return is ignored).
            late = ("retry", f"timeout: the attempt ran past its {limit}s limit", None)
            timers = [threading.Timer(limit, d.cancelled.set),
                      threading.Timer(limit + self.lease / 6, self._settle, args=(d, late))]
            for t in timers:
                t.daemon = True
                t.start()
        try:
            result = self.handler(job)
            outcome = ("ok", result)
        except Retry as e:
            outcome = ("retry", str(e) or "retry", e.after)
            if d.cancel_requested:
                outcome = ("cancel", str(e) or "cancelled")
        except Permanent as e:
            outcome = ("dead", str(e) or "failed permanently")
        except Exception as e:  # a handler's bug is an attempt that failed
            outcome = ("retry", f"{type(e).__name__}: {e}", None)
            if d.cancel_requested:
                outcome = ("cancel", f"cancelled ({type(e).__name__}: {e})")
            log.debug("rill: job %s failed: %s", job.id, traceback.format_exc())
        finally:
            for t in timers:
                t.cancel()
        timed_out = limit and d.cancelled.is_set() and outcome[0] != "ok" and not d.lost
        if timed_out:
            outcome = ("retry", f"timeout: the attempt ran past its {limit}s limit ({outcome[1]})", None)
        self._settle(d, outcome)

    def _settle(self, d, outcome):
        with self._lock:
            if self._held.get(d.address) is not d or d.settling:
                return  # given up (lease lost), or settled already (a timeout): write nothing
            d.settling = True
        try:
            if d.lost:
                return
            if outcome[0] == "ok":
                self._ack(d, outcome[1])
            elif outcome[0] == "dead":
                self._fail(d, "dead", outcome[1], 0, "failed")
            elif outcome[0] == "cancel":
                self._fail(d, "cancel", outcome[1], 0, "")
            else:
                after = outcome[2]
                attempt = d.envelope.attempts + d.token
                delay = after if after is not None else self._backoff(attempt)
                self._fail(d, "retry", outcome[1], wire.ms(delay), "")
        except Exception as e:  # Redis away: the lease lapses and the job runs again elsewhere
            log.warning("rill: could not record job %s: %s", d.envelope.job_id, e)
        finally:
            with self._lock:
                self._held.pop(d.address, None)

    def _backoff(self, attempt):
        base = min(self.max_backoff, self.backoff * (2 ** max(0, attempt - 1)))
        return base * random.uniform(0.5, 1.0)

    def _ack(self, d, result):
        env = d.envelope
        data = b"" if result is None else wire.encode(result, self.client.max_payload)
        if data == b"\xf6":
            data = b""  # CBOR null is no result (SPEC.md section 3)
        k = self.keys
        keys = [d.stream, k.index, k.events, k.held]
        args = [GROUP, self.consumer, _now_ms(), self.retention_ms, self.events_maxlen, "0", 1, 1000, "1",
                env.entry_id, d.token]
        if data or env.job_id != env.entry_id or d.touched:
            keys += [k.job(env.job_id), k.checkpoints(env.job_id)]
            args += [1, env.job_id, env.attempts + d.token, data, "1" if d.touched else "0"]
        got = self.scripts["ack.lua"](keys=keys, args=args)
        if got == 1 or got == [1]:
            self.completed += 1

    def _fail(self, d, mode, error, delay_ms, reason):
        env = d.envelope
        k = self.keys
        code, _made = self.scripts["fail.lua"](
            keys=[d.stream, k.delayed, k.scheduled, k.index, k.dead, k.dead_index, k.events, k.job(env.job_id)],
            args=[GROUP, self.consumer, env.entry_id, d.token, env.job_id, _now_ms(), mode, delay_ms,
                  error[:4096], reason, self.max_attempts, self.events_maxlen, self.retention_ms])
        if code == 3:
            self.dead += 1
        elif code in (1, 2):
            self.failed += 1

    def _dead_letter_refused(self, stream, eid, fields, token, refused):
        jid = job_id_of(eid, fields or [], self._suffix(stream))
        k = self.keys
        try:
            self.scripts["fail.lua"](
                keys=[stream, k.delayed, k.scheduled, k.index, k.dead, k.dead_index, k.events, k.job(jid)],
                args=[GROUP, self.consumer, eid, token, jid, _now_ms(), "dead", 0, str(refused)[:4096],
                      refused.reason, self.max_attempts, self.events_maxlen, self.retention_ms])
            self.dead += 1
        except Exception as e:
            log.warning("rill: could not dead-letter entry %s: %s", eid, e)

    def _checkpoint(self, d, state, label):
        data = wire.encode(state, CHECKPOINT_MAX)
        env = d.envelope
        code, version = self.scripts["checkpoint.lua"](
            keys=[d.stream, self.keys.checkpoints(env.job_id)],
            args=[GROUP, self.consumer, env.entry_id, d.token, 0, _now_ms(), label, data, CHECKPOINT_KEEP,
                  CHECKPOINT_TTL_MS, CHECKPOINT_MAX])
        if code == 1:
            d.touched = True
            return int(version)
        if code == 0:
            return None
        raise RillError(f"checkpoint.lua answered {code} ({version})")

    def _last_checkpoint(self, d):
        from .job import Checkpoint
        got = self.r.xrevrange(self.keys.checkpoints(d.envelope.job_id), count=1)
        if not got:
            return None
        f = got[0][1]
        return Checkpoint(int(f[b"version"]), wire.decode(f[b"state"]), _text(f.get(b"label", b"")),
                          int(f.get(b"ms", b"0")))

    def _update(self, d, name, value):
        d.touched = True
        got = self.scripts["update.lua"](keys=[d.stream, self.keys.job(d.envelope.job_id)],
                                         args=[GROUP, self.consumer, d.envelope.entry_id, d.token, name,
                                               wire.encode(value), self.retention_ms])
        return got == 1

    # Signals

    def _listen(self):
        conn = self._fetch_connection()
        try:
            while not self._stopping.is_set():
                try:
                    got = conn.xread({self.keys.signals: self._signals_after}, block=wire.ms(self.block))
                except (_redis.ConnectionError, _redis.TimeoutError) as e:
                    log.warning("rill: reading signals failed (%s); retrying", e)
                    time.sleep(0.5)
                    continue
                for _stream, entries in got or []:
                    for sid, fields in entries:
                        self._signals_after = _text(sid)
                        try:
                            self._apply({_text(k): v for k, v in fields.items()}, _text(sid))
                        except Exception as e:
                            log.warning("rill: signal %s not applied: %s", _text(sid), e)
        finally:
            conn.close()

    def _apply(self, f, sid):
        kind, target = _text(f.get("kind", b"")), _text(f.get("target", b""))
        mine = target in ("queue", f"worker:{self.consumer}")
        if target.startswith("job:"):
            jid = target[4:]
            with self._lock:
                d = next((d for d in self._held.values() if d.envelope.job_id == jid), None)
            if d is None:
                return  # another worker's job, or none: not ours to answer
            if kind == "cancel":
                d.cancel_requested = True
                d.cancelled.set()
                self._outcome(sid, "applied", "cancelling the running job")
            else:
                self._outcome(sid, "ignored", f"{kind} of a running job is not supported by this client")
        elif not mine:
            return
        elif kind == "pause" and target == "queue":
            self._paused = True
            self._outcome(sid, "applied", "taking no new jobs")
        elif kind == "resume" and target == "queue":
            self._paused = False
            self._outcome(sid, "applied", "taking jobs again")
        elif kind == "quiet":
            self._quiet = True
            self._outcome(sid, "applied", "taking no new jobs")
        elif kind == "stop":
            self._outcome(sid, "applied", "stopping")
            self.stop()
        else:
            self._outcome(sid, "ignored", f"{kind} is not handled by this worker")

    def _outcome(self, sid, outcome, reason):
        self.r.xadd(self.keys.outcomes, {"signal": sid, "receiver": self.consumer, "outcome": outcome,
                                         "reason": reason, "ms": _now_ms()}, maxlen=10_000, approximate=True)

    # Leases, stalled jobs, due jobs

    def _maintain(self):
        renew_every = self.lease / 3
        next_renew = next_reclaim = next_promote = next_beat = 0.0
        cursor = {}
        while not self._stopping.is_set() or self._held:
            now = time.monotonic()
            try:
                if now >= next_renew:
                    self._renew()
                    next_renew = now + renew_every
                if now >= next_beat:
                    self._beat()
                    next_beat = now + 1.0
                if self._stopping.is_set():
                    time.sleep(0.05)
                    continue
                if now >= next_reclaim:
                    if now < self._release_until:
                        self._release_orphans()
                    self._adopt()
                    cursor = self._reclaim(cursor)
                    next_reclaim = now + self.reclaim_every
                if now >= next_promote:
                    self._promote()
                    next_promote = now + 1.0
            except Exception as e:
                log.warning("rill: maintenance failed: %s", e)
            time.sleep(min(0.05, renew_every))

    def _watch(self):
        # Its own thread: a maintenance call blocked on a stalled Redis must not keep this check from running.
        while not self._stopping.is_set() or self._held:
            self._give_up_overdue()
            time.sleep(0.05)

    def _renew(self):
        with self._lock:
            held = list(self._held.values())
        if not held:
            return
        sent = time.monotonic()
        by_stream = {}
        for d in held:
            by_stream.setdefault(d.stream, []).append(d)
        for stream, ds in by_stream.items():
            args = [GROUP, self.consumer]
            for d in ds:
                args += [d.envelope.entry_id, d.token]
            codes = self.scripts["extend.lua"](keys=[stream], args=args)
            for d, code in zip(ds, codes):
                if code == 1:
                    d.renewed = sent
                else:
                    self._lose(d)

    def _give_up_overdue(self):
        # Let go before anyone may take over (SPEC.md section 9a): no renewal landed for 2/3 of the lease, or no
        # heartbeat for 2/3 of crash_after (others may then adopt every job of this worker).
        limit = self.lease * 2 / 3
        silent = time.monotonic() - self._beat_landed > CRASH_AFTER_MS / 1000 * 2 / 3
        with self._lock:
            overdue = [d for d in self._held.values() if silent or time.monotonic() - d.renewed > limit]
        for d in overdue:
            self._lose(d)

    def _lose(self, d):
        self.lease_failures += 1
        d.lost = True
        d.cancelled.set()
        with self._lock:
            if self._held.get(d.address) is d:
                del self._held[d.address]

    def _beat(self):
        with self._lock:
            running = sorted((d.started_ms, d.envelope.job_id) for d in self._held.values())
        status = "draining" if self._stopping.is_set() else ("busy" if running else "idle")
        if self._paused and not self._stopping.is_set():
            status = "paused"
        failures = self.lease_failures
        per_beat = ["status", status, "reason", "", "in_flight", len(running), "processed", self.completed,
                    "failed", self.failed + self.dead, "lease_failures", failures - self._lease_failures_beaten]
        fields = per_beat + ["running", " ".join(f"{ms}:{jid}" for ms, jid in running[:100])]
        if not self._registered:
            fields += ["host", socket.gethostname(), "pid", os.getpid(), "queue", self.keys.queue,
                       "concurrency", self.concurrency, "version", "python-0.1.0", "started_ms", self._started_ms,
                       "capabilities", ""]
        k = self.keys
        sent = time.monotonic()
        _beat_id, new, crashed = self.scripts["heartbeat.lua"](
            keys=[k.workers, k.worker(self.consumer), k.heartbeats],
            args=[self.consumer, 0, HEARTBEATS_MAXLEN, RECORD_TTL_MS, CRASH_AFTER_MS, len(per_beat) // 2] + fields)
        self._lease_failures_beaten = failures
        self._beat_landed = sent
        if not self._registered:
            self._registered = True
        elif int(new) > 0:
            # The per-beat fields alone created fields: no record was there (Redis lost it, or others judged this
            # worker crashed): send the static fields again next beat.
            self._registered = False
        self._crashed = [_text(c) for c in crashed]

    def _adopt(self):
        k = self.keys
        while self._crashed and self._free() > 0:
            crashed = self._crashed.pop(0)
            streams = self._streams()
            for stream in streams:
                others = [s for s in streams if s != stream]
                _code, taken, _dead = self.scripts["adopt.lua"](
                    keys=[stream, k.index, k.dead, k.dead_index, k.events, k.workers, k.worker(crashed)] + others,
                    args=[GROUP, self.consumer, crashed, 0, CRASH_AFTER_MS, max(1, self._free()),
                          self.max_attempts, self.events_maxlen])
                for eid, token, flat in taken:
                    self._dispatch(stream, _text(eid), _pairs(flat), int(token))

    def _reclaim(self, cursors):
        k = self.keys
        for stream in self._streams():
            free = self._free()
            if free == 0:
                break
            nxt, taken, _dead, _gone = self.scripts["reclaim.lua"](
                keys=[stream, k.index, k.dead, k.dead_index, k.events],
                args=[GROUP, self.consumer, wire.ms(self.lease), cursors.get(stream, "0-0"), free, _now_ms(),
                      self.max_attempts, self.events_maxlen])
            cursors[stream] = _text(nxt)
            for eid, token, flat in taken:
                self._dispatch(stream, _text(eid), _pairs(flat), int(token))
        return cursors

    def _promote(self):
        k = self.keys
        out = self.scripts["promote.lua"](
            keys=[k.delayed, k.scheduled, k.ready, k.index, k.events, k.schedules, k.limit] + k.level_tail(),
            args=[0, 1000, self.events_maxlen])
        if self._set_levels(_text(out[5]), _text(out[6])):
            self._create_group()
        self._limited = int(out[3]) != 0

    # Shutdown

    def _shutdown(self):
        deadline = time.monotonic() + max(30.0, self.lease)
        while time.monotonic() < deadline:
            with self._lock:
                if not self._held:
                    break
            time.sleep(0.02)
        for t in self._threads:
            t.join(timeout=5)
        self._release_pending()
        try:
            for stream in self._streams():
                self.scripts["retire.lua"](keys=[stream], args=[GROUP, self.consumer])
            # A graceful exit leaves the registry (SPEC.md section 6c).
            self.r.delete(self.keys.worker(self.consumer))
            self.r.zrem(self.keys.workers, self.consumer)
        except Exception as e:
            log.warning("rill: could not retire %s: %s", self.consumer, e)

    def _release_pending(self):
        # Whatever is still pending to this consumer (a read that landed late, a job given up) goes back to ready
        # without counting an attempt.
        for stream in self._streams():
            try:
                pending = self.r.xpending_range(stream, GROUP, min="-", max="+", count=10000,
                                                consumername=self.consumer)
            except _redis.ResponseError:
                continue  # no such stream or group any more
            self._release(stream, [(_text(p["message_id"]), p["times_delivered"]) for p in pending])

    def _release_orphans(self):
        with self._lock:
            mine = {(d.stream, d.envelope.entry_id) for d in self._held.values()}
        for stream in self._streams():
            pending = self.r.xpending_range(stream, GROUP, min="-", max="+", count=1000, consumername=self.consumer)
            self._release(stream, [(_text(p["message_id"]), p["times_delivered"]) for p in pending
                                   if (stream, _text(p["message_id"])) not in mine])

    def _release(self, stream, deliveries):
        if not deliveries:
            return
        args = [GROUP, self.consumer, _now_ms(), self.events_maxlen]
        for eid, token in deliveries:
            args += [eid, token]
        self.scripts["release.lua"](keys=[stream, self.keys.index, self.keys.events], args=args)


def _pairs(flat):
    if flat is None:
        return None
    if isinstance(flat, dict):  # a client that folded the fields: take them as they are
        return list(flat.items())
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def _now_ms():
    return int(time.time() * 1000)
