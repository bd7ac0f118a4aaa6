"""What keeps a worker's deliveries and the queue healthy beside the handlers (SPEC.md section 9, steps 4, 6 to 8;
section 6c): lease renewal, letting go before a takeover, heartbeats, adoption of crashed workers, reclaim of
stalled jobs, promotion of due ones, and the hand-back at shutdown."""

import logging
import os
import socket
import time

import redis as _redis

from . import wire
from ._common import now_ms, pairs, text
from .keys import GROUP
from .schedule import fire_due

log = logging.getLogger("rill.worker")

CRASH_AFTER_MS = 3000
RECORD_TTL_MS = 24 * 3600 * 1000
HEARTBEATS_MAXLEN = 10_000
# The record's expiry is set on registration and then hourly (a beat in plain commands leaves it).
TTL_REFRESH_S = 3600.0
# The longest a reading of the server's clock serves beats in plain commands (the monotonic clock fills in between);
# each such beat takes a new one.
CLOCK_READ_S = 60.0


class Upkeep:
    """The worker's maintenance thread and watch (a mixin of ``Worker``)."""

    def _maintain(self):
        renew_every = self.lease / 3
        next_renew = next_reclaim = next_promote = next_beat = 0.0
        cursor = {}
        self._hold_fires_until = 0.0
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
                        self._release_pending(skip_held=True)
                    self._adopt()
                    cursor = self._reclaim(cursor)
                    next_reclaim = now + self.reclaim_every
                if now >= next_promote:
                    next_promote = now + 1.0  # kept if it fails
                    next_promote = now + self._promote()
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
        if self._registered and sent - self._ttl_set < TTL_REFRESH_S:
            # Registered, the expiry not due: the same writes in plain commands, which cost Redis less than the
            # script (SPEC.md section 6c), judged by the server's clock as this worker tracks it.
            now = self._server_now_ms()
            p = self.r.pipeline(transaction=False)
            p.execute_command("HSET", k.worker(self.consumer), "last_beat_ms", now, *fields)
            p.execute_command("ZADD", k.workers, "XX", "CH", now, self.consumer)
            p.execute_command("ZRANGEBYSCORE", k.workers, "-inf", f"({now - CRASH_AFTER_MS}", "LIMIT", 0, 8)
            p.execute_command("XADD", k.heartbeats, "MAXLEN", "~", HEARTBEATS_MAXLEN, "*", "worker", self.consumer,
                              "ms", now, *per_beat)
            # The server's clock read with every beat, for the next one: redis-py reconnects out of sight (after a
            # failover, to a server whose clock may differ), so a reading kept for a minute could be off that long.
            p.execute_command("TIME")
            asked = time.monotonic()
            new, scored, crashed, _beat_id, (secs, micros) = p.execute()
            self._read_clock(secs, micros, asked)
            # A field created: no record was there; not scored: not in the registry (XX never adds it).
            registered = int(new) == 0 and int(scored) == 1
        else:
            _beat_id, new, crashed = self.scripts["heartbeat.lua"](
                keys=[k.workers, k.worker(self.consumer), k.heartbeats],
                args=[self.consumer, 0, HEARTBEATS_MAXLEN, RECORD_TTL_MS, CRASH_AFTER_MS, len(per_beat) // 2]
                + fields)
            self._ttl_set = sent
            # The per-beat fields alone created fields: no record was there (Redis lost it, or others judged this
            # worker crashed).
            registered = not self._registered or int(new) == 0
        self._lease_failures_beaten = failures
        self._beat_landed = sent
        # Unregistered, the next beat sends the static fields again, through the script.
        self._registered = registered
        self._crashed = [text(c) for c in crashed]

    def _server_now_ms(self):
        """The Redis server's clock, ms: a `TIME` reading (the last beat's, or taken here when it is over a minute
        old) plus the monotonic time since, counted from the middle of its round trip. Beats are judged by the
        server's clock, so hosts whose clocks disagree agree on them."""
        if self._clock is None or time.monotonic() - self._clock[1] >= CLOCK_READ_S:
            sent = time.monotonic()
            secs, micros = self.r.time()
            self._read_clock(secs, micros, sent)
        ms, at = self._clock
        return ms + int((time.monotonic() - at) * 1000)

    def _read_clock(self, secs, micros, asked):
        """Tracks the server's clock from a `TIME` reply to a call sent at `asked` (monotonic): the reading stands
        for the middle of the round trip."""
        self._clock = (int(secs) * 1000 + int(micros) // 1000, (asked + time.monotonic()) / 2)

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
                    self._dispatch(stream, text(eid), pairs(flat), int(token))

    def _reclaim(self, cursors):
        k = self.keys
        for stream in self._streams():
            free = self._free()
            if free == 0:
                break
            nxt, taken, _dead, _gone = self.scripts["reclaim.lua"](
                keys=[stream, k.index, k.dead, k.dead_index, k.events],
                args=[GROUP, self.consumer, wire.ms(self.lease), cursors.get(stream, "0-0"), free, now_ms(),
                      self.max_attempts, self.events_maxlen])
            cursors[stream] = text(nxt)
            for eid, token, flat in taken:
                self._dispatch(stream, text(eid), pairs(flat), int(token))
        return cursors

    def _promote(self):
        k = self.keys
        out = self.scripts["promote.lua"](
            keys=[k.delayed, k.scheduled, k.ready, k.index, k.events, k.schedules, k.limit] + k.level_tail(),
            args=[0, 1000, self.events_maxlen])
        if self._set_levels(text(out[5]), text(out[6])):
            self._create_group()
        self._limited = int(out[3]) != 0
        next_fire, now = int(out[2]), now_ms()
        if 0 <= next_fire <= now and time.monotonic() >= self._hold_fires_until:
            hold = fire_due(self.r, self.scripts, k, self.events_maxlen, now, log)
            if hold is not None:
                self._hold_fires_until = time.monotonic() + hold
            next_fire = -1  # looked at now; the next call reads what it became
        # Sleep until the next due job or fire time, at most a second (others may add earlier ones); a fire time
        # the server's clock has not reached yet waits for the hold.
        soonest = [x for x in (int(out[1]), next_fire) if x >= 0]
        wait = min([1.0] + [max(x - now, 10) / 1000 for x in soonest])
        return max(wait, self._hold_fires_until - time.monotonic())

    # Shutdown

    def _shutdown(self):
        self._ask_to_yield()  # long jobs checkpoint and yield: they resume elsewhere at once
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

    def _release_pending(self, skip_held=False):
        # Whatever is still pending to this consumer (a read that landed late, a job given up) goes back to ready
        # without counting an attempt; with skip_held, not the deliveries it still holds.
        mine = set()
        if skip_held:
            with self._lock:
                mine = {(d.stream, d.envelope.entry_id) for d in self._held.values()}
        for stream in self._streams():
            try:
                pending = self.r.xpending_range(stream, GROUP, min="-", max="+", count=10000,
                                                consumername=self.consumer)
            except _redis.ResponseError:
                continue  # no such stream or group any more
            self._release(stream, [(text(p["message_id"]), p["times_delivered"]) for p in pending
                                   if (stream, text(p["message_id"])) not in mine])

    def _release(self, stream, deliveries):
        if not deliveries:
            return
        args = [GROUP, self.consumer, now_ms(), self.events_maxlen]
        for eid, token in deliveries:
            args += [eid, token]
        self.scripts["release.lua"](keys=[stream, self.keys.index, self.keys.events], args=args)


