"""Waiting for a job to end (SPEC.md section 7): one blocking read of a queue's events stream per client, shared by
every waiter of that queue, so a thousand waiters cost one read, not a thousand polls. Each waiter looks at the job's
state once after it is registered (a job that ends in between is seen either way), then waits for its event,
looking at the state again every few seconds in case the event never comes."""

import threading

import redis as _redis

from ._common import dedicated, text

RECHECK = 5.0
"""Seconds between looks at a waiting job's state when no event has come."""
ENDED = ("completed", "dead", "cancelled", "unknown")


class Follower:
    """The shared read of one events stream: job id -> the Events of its waiters."""

    def __init__(self, redis, events):
        self.events = events
        self.conn = dedicated(redis, 5)
        newest = self.conn.xrevrange(events, count=1)
        self.after = text(newest[0][0]) if newest else "0-0"
        self.waiting = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._follow, name="rill-wait", daemon=True)
        self.thread.start()

    def expect(self, job_id):
        ended = threading.Event()
        with self.lock:
            self.waiting.setdefault(job_id, []).append(ended)
        return ended

    def forget(self, job_id, ended):
        with self.lock:
            waiters = self.waiting.get(job_id, [])
            if ended in waiters:
                waiters.remove(ended)
            if not waiters:
                self.waiting.pop(job_id, None)

    def _tell(self, job_id):
        with self.lock:
            for e in self.waiting.pop(job_id, []):
                e.set()

    def _follow(self):
        while True:
            try:
                got = self.conn.xread({self.events: self.after}, block=500, count=100)
            except (_redis.ConnectionError, _redis.TimeoutError):
                # The waiters look at their jobs' states every few seconds meanwhile.
                threading.Event().wait(0.5)
                continue
            for _stream, entries in got or []:
                for eid, f in entries:
                    self.after = text(eid)
                    kind = text(f.get(b"event"))
                    if kind == "completed":
                        for jid in text(f.get(b"ids")).split(" "):
                            if jid:
                                self._tell(jid)
                    elif kind in ("dead", "cancelled"):
                        self._tell(text(f.get(b"id")))


_followers = {}
_followers_lock = threading.Lock()


def follower(client, events):
    key = (id(client), events)
    with _followers_lock:
        f = _followers.get(key)
        if f is None:
            f = Follower(client.redis, events)
            _followers[key] = f
        return f
