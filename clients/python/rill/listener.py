"""How a worker follows the queue's signals (SPEC.md section 6b)."""

import logging
import time

import redis as _redis

from . import wire
from ._common import now_ms, text

log = logging.getLogger("rill.worker")


class Listening:
    """The worker's part that reads the signals stream and applies what is for it (a mixin of ``Worker``)."""

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
                        self._signals_after = text(sid)
                        try:
                            self._apply({text(k): v for k, v in fields.items()}, text(sid))
                        except Exception as e:
                            log.warning("rill: signal %s not applied: %s", text(sid), e)
        finally:
            conn.close()

    def _apply(self, f, sid):
        kind, target = text(f.get("kind", b"")), text(f.get("target", b""))
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
            elif kind == "pause":
                # A session: the job checkpoints and yields at `job.stopping`, and is parked until resumed.
                d.park_requested = True
                d.stopping.set()
                self._outcome(sid, "applied", "parking the job once it yields")
            else:
                self._outcome(sid, "ignored", f"{kind} of a running job does not apply")
        elif not mine:
            return
        elif kind == "pause" and target == "queue":
            self._paused = True
            self._ask_to_yield()
            self._outcome(sid, "applied", "taking no new jobs; running ones asked to yield")
        elif kind == "resume" and target == "queue":
            self._paused = False
            self._outcome(sid, "applied", "taking jobs again")
        elif kind == "quiet":
            self._quiet = True
            self._ask_to_yield()
            self._outcome(sid, "applied", "taking no new jobs; running ones asked to yield")
        elif kind == "stop":
            self._outcome(sid, "applied", "stopping")
            self.stop()
        else:
            self._outcome(sid, "ignored", f"{kind} is not handled by this worker")

    def _ask_to_yield(self):
        with self._lock:
            for d in self._held.values():
                d.stopping.set()

    def _outcome(self, sid, outcome, reason):
        self.r.xadd(self.keys.outcomes, {"signal": sid, "receiver": self.consumer, "outcome": outcome,
                                         "reason": reason, "ms": now_ms()}, maxlen=10_000, approximate=True)

