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

Long jobs checkpoint and yield at ``job.stopping`` by raising ``rill.Interrupted``: handed back (shutdown, a
paused queue, a quieted worker) or parked (a pause of that job: a session) without counting an attempt.
"""

import logging
import os
import socket
import threading
import time
import traceback

import redis as _redis

from . import wire
from ._common import dedicated, now_ms, pairs, text
from .errors import Interrupted, InvalidOption, Partitioned, Permanent, Retry, RillError
from .job import Delivery, Job, Refused, decode_payload, parse_entry
from .keys import GROUP
from .listener import Listening
from .settle import Settling
from .upkeep import Upkeep

log = logging.getLogger("rill.worker")

DEFAULT_LEASE = 5.0
RETENTION = 24 * 3600.0
EVENTS_MAXLEN = 10_000


class Worker(Settling, Listening, Upkeep):
    """Runs ``handler(job)`` for the jobs of ``queue``, up to ``concurrency`` at once, each in its own thread.

    The handler returns the job's result (any CBOR value; ``None``: none), raises ``rill.Retry(msg, after=s)``
    to retry (after ``s`` seconds, else the backoff), ``rill.Permanent(msg)`` to dead-letter it now, or any other
    exception to retry with backoff until ``max_attempts`` (the job's own, else this default).

        worker = rill.Worker(client, "emails", send, concurrency=16)
        worker.run()           # until worker.stop() from another thread, or Ctrl-C
    """

    def __init__(self, client, queue, handler=None, concurrency=8, lease=DEFAULT_LEASE, max_attempts=5,
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
        # When a beat last set the record's expiry (monotonic), and the server's clock as tracked: (ms, at).
        self._ttl_set = float("-inf")
        self._clock = None
        self._crashed = []
        self._started_ms = now_ms()
        self._lease_failures_beaten = 0
        self._beat_landed = time.monotonic()  # when the last beat that landed was sent
        self._release_until = 0.0  # after a read was given up on, release what Redis assigns us late

    # Running

    def run(self, handler=None):
        """Works jobs with ``handler`` (or the one given to the constructor) until ``stop()`` (or
        KeyboardInterrupt); then waits for running jobs and hands back the rest."""
        if handler is not None:
            self.handler = handler
        if self.handler is None:
            raise InvalidOption("handler", "give one to Worker(...) or to run(...)")
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
                        self._release(stream, [(text(eid), 1) for eid, _ in entries])
                        continue
                    for eid, flat in entries:
                        self._dispatch(stream, text(eid), pairs(flat), 1)
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
        # This package's worker reads one key set: on a partitioned queue it would leave the other partitions'
        # jobs waiting, so it refuses to start rather than work part of the queue.
        if self.client.partitions(self.keys) is not None:
            raise Partitioned(self.keys.queue, "this package's worker runs one partition; run a Rust worker "
                              "(`rill work QUEUE -- CMD` runs any program) for partitioned queues")
        levels, weights = self.r.hmget(self.keys.priorities, "levels", "weights")
        self._set_levels(text(levels or b""), text(weights or b""))
        self._create_group()
        self.r.hsetnx(self.keys.config, "lease_ms", wire.ms(self.lease))
        stored, default_timeout = self.r.hmget(self.keys.config, "lease_ms", "timeout_ms")
        if stored:
            self.lease = int(stored) / 1000
        # The queue's default limit for jobs without their own, unless this worker was given one.
        if self.timeout is None and default_timeout and int(default_timeout) > 0:
            self.timeout = int(default_timeout) / 1000
        limits = self.r.hmget(self.keys.limit, "rate", "concurrency", "key_field")
        self._limited = any(limits) or bool(self.r.zcard(self.keys.held))
        self._paused = bool(self.r.exists(self.keys.paused))
        newest = self.r.xrevrange(self.keys.signals, count=1)
        self._signals_after = text(newest[0][0]) if newest else "0-0"
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
        wait = text(wait)
        if int(limited) == 0:
            self._limited = False
            return []
        if wait == "":
            return [(text(stream), entries) for stream, entries in read]
        if wait == "again":
            return []
        if wait == "rate":
            self._stopping.wait(int(after) / 1000)
            return []
        block = wire.ms(self.block)
        if wait == "room":
            streams, ids, block = [k.events], [text(after)], min(block, 1000)
        elif wait == "entries":
            streams, ids = order, [text(a) for a in after]
        elif wait == "keys":
            ids = [text(a) for a in after]
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
            return [(text(s), e) for s, e in got or []]
        out, left = [], free
        for stream in order:
            got = conn.execute_command("XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", left, "STREAMS",
                                       stream, ">")
            for s, entries in got or []:
                out.append((text(s), entries))
                left -= len(entries)
            if left <= 0:
                return out
        if out:
            return out
        got = conn.execute_command("XREADGROUP", "GROUP", GROUP, self.consumer, "COUNT", free, "BLOCK",
                                   wire.ms(self.block), "STREAMS", *order, *([">"] * len(order)))
        left = free
        for s, entries in got or []:
            s = text(s)
            keep, extra = entries[:max(0, left)], entries[max(0, left):]
            left -= len(keep)
            if keep:
                out.append((s, keep))
            if extra:
                self._release(s, [(text(eid), 1) for eid, _ in extra])
        return out

    def _fetch_connection(self):
        conn = dedicated(self.r, self.block + 5)
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
        d.started_ms = now_ms()
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
        except Interrupted:
            # It yielded: parked if a signal paused this job, else back on the queue; no attempt counted.
            outcome = ("park",) if d.park_requested else ("hand back",)
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
