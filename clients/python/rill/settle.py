"""How a worker ends a delivery (SPEC.md section 9, steps 3 to 5): through the fenced scripts, so a delivery
someone else took over writes nothing; and what a handler writes while it runs (progress, checkpoints)."""

import logging
import random

from . import wire
from ._common import now_ms, text
from .errors import RillError
from .job import job_id_of
from .keys import GROUP

log = logging.getLogger("rill.worker")

CHECKPOINT_KEEP = 10
CHECKPOINT_TTL_MS = 7 * 24 * 3600 * 1000
CHECKPOINT_MAX = 1024 * 1024


class Settling:
    """The worker's part that finishes deliveries (a mixin of ``Worker``: it uses the worker's keys, scripts,
    lock and held deliveries)."""

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
            elif outcome[0] == "park":
                k = self.keys
                self.scripts["park.lua"](keys=[d.stream, k.scheduled, k.parked, k.index, k.events],
                                         args=[GROUP, self.consumer, d.envelope.entry_id, d.token, now_ms(),
                                               self.events_maxlen])
            elif outcome[0] == "hand back":
                self._release(d.stream, [(d.envelope.entry_id, d.token)])
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
        args = [GROUP, self.consumer, now_ms(), self.retention_ms, self.events_maxlen, "0", 1, 1000, "1",
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
            args=[GROUP, self.consumer, env.entry_id, d.token, env.job_id, now_ms(), mode, delay_ms,
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
                args=[GROUP, self.consumer, eid, token, jid, now_ms(), "dead", 0, str(refused)[:4096],
                      refused.reason, self.max_attempts, self.events_maxlen, self.retention_ms])
            self.dead += 1
        except Exception as e:
            log.warning("rill: could not dead-letter entry %s: %s", eid, e)

    def _checkpoint(self, d, state, label):
        data = wire.encode(state, CHECKPOINT_MAX)
        env = d.envelope
        code, version = self.scripts["checkpoint.lua"](
            keys=[d.stream, self.keys.checkpoints(env.job_id)],
            args=[GROUP, self.consumer, env.entry_id, d.token, 0, now_ms(), label, data, CHECKPOINT_KEEP,
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
        return Checkpoint(int(f[b"version"]), wire.decode(f[b"state"]), text(f.get(b"label", b"")),
                          int(f.get(b"ms", b"0")))

    def _update(self, d, name, value):
        d.touched = True
        got = self.scripts["update.lua"](keys=[d.stream, self.keys.job(d.envelope.job_id)],
                                         args=[GROUP, self.consumer, d.envelope.entry_id, d.token, name,
                                               wire.encode(value), self.retention_ms])
        return got == 1

