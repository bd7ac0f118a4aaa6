"""Schedules (SPEC.md section 6e): jobs enqueued at the times a cron expression matches in an IANA time zone, or
at a fixed interval, stored in Redis and fired by whichever workers of the queue run (any language), each fire
time once: ``fire.lua`` enqueues only while the schedule still waits for the time the caller read.

    from rill import Schedule
    q.schedule("nightly-report", Schedule.cron("0 3 * * *", tz="Europe/Berlin"), {"kind": "full"})
    q.schedule("poll", Schedule.every(30, missed="skip"), None)

Cron expressions are read by croniter (``pip install croniter``), as croner reads them for rill's Rust workers:
five fields, or six with seconds first, ``@daily`` and the like, ``L``, ``#``, ``W``, and croner's ``5L`` (last
Friday). They are matched on the zone's wall clock and placed in the zone as croner places them (SPEC.md section
6e): a time that happens twice fires once, the first time; one in a daylight-saving gap is skipped, unless the
expression names a single time of day, which then fires at the gap's end.
"""

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

from redis.exceptions import WatchError as _WatchError

from . import wire
from ._common import now_ms, text
from . import keys as _keys
from .errors import InvalidOption

ON_TIME_MS = 60_000
"""How late a fire time may run and still count as on time (a worker woke late, Redis was away briefly)."""
MAX_CATCH_UP = 10_000
"""Most fire times looked at when catching up after a long gap; the missed policy applies to the newest."""
NEVER = 2**64 - 1
"""The next fire time of a schedule that never fires again (as rill's other clients write it)."""
MISSED = ("skip", "once", "all")
FIELDS = ("kind", "cron", "tz", "every_ms", "missed", "missed_max", "priority")


def _cron_lib():
    try:
        from croniter import croniter
    except ImportError as e:  # a declared dependency; a producer of plain jobs can do without it
        raise InvalidOption("schedule", "cron schedules need the croniter package (pip install croniter)") from e
    return croniter


def _zone(name):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidOption("schedule", f"{name!r} is not an IANA time zone name") from e


ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def _fixed_time(expr):
    """Whether ``expr`` names one time of day (one second, minute and hour, no step): croner's fixed-time job,
    which a daylight-saving gap moves to the first time after it rather than skipping."""
    fields = ALIASES.get(expr.strip().lower(), expr).split()
    sec_min_hour = (["0"] + fields[:2]) if len(fields) == 5 else fields[:3]
    return all(f.isdigit() for f in sec_min_hour)


def _offset(zone, s):
    return int(datetime.fromtimestamp(s, zone).utcoffset().total_seconds())


def _place(zone, wall_s, fixed):
    """The instant (s) wall-clock time ``wall_s`` (seconds, counted as if in UTC) names in ``zone``, as croner
    places it: a time that happens twice is its first; one in a gap is skipped (None), or for a fixed-time job
    moved to the gap's end, when that is still the same day."""
    before, after = _offset(zone, wall_s - 86400), _offset(zone, wall_s + 86400)
    valid = [wall_s - o for o in sorted({before, after}, reverse=True) if _offset(zone, wall_s - o) == o]
    if valid:
        return valid[0]
    if not fixed or after <= before:
        return None
    lo, hi = wall_s - after, wall_s - before  # the change of offset lies between
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(zone, mid) == after:
            hi = mid
        else:
            lo = mid
    same_day = (hi + after) // 86400 == wall_s // 86400
    return hi if same_day else None


def _for_croniter(expr):
    """``expr`` as croniter spells it: croner's ``<weekday>L`` (last such weekday of the month) is croniter's
    ``L<weekday>``."""
    fields = expr.split()
    if len(fields) in (5, 6):
        fields[-1] = re.sub(r"\b([0-7])L\b", r"L\1", fields[-1])
    return " ".join(fields)


@dataclass(frozen=True)
class Schedule:
    """When a schedule fires, and what it does with fire times missed while no worker ran: ``missed`` is
    ``"once"`` (default: one job for all of them, carrying the newest), ``"skip"`` (none) or ``"all"`` (each,
    the newest ``missed_max``). ``priority`` is the level of the jobs it enqueues."""

    kind: str
    expr: Optional[str] = None
    tz: str = "UTC"
    every_ms: Optional[int] = None
    missed: str = "once"
    missed_max: int = 1
    priority: int = 0

    @classmethod
    def cron(cls, expr, tz="UTC", missed="once", missed_max=None, priority=0):
        """Fires at the times cron expression ``expr`` matches in zone ``tz`` (IANA name, default UTC)."""
        return cls._checked(cls("cron", expr=expr, tz=tz, missed=missed,
                                missed_max=_max(missed, missed_max), priority=priority))

    @classmethod
    def every(cls, interval, missed="once", missed_max=None, priority=0):
        """Fires every ``interval`` (seconds or a timedelta, at least 1 s), first one interval after it is
        added."""
        if isinstance(interval, timedelta):
            interval = interval.total_seconds()
        if not isinstance(interval, (int, float)) or interval < 1:
            raise InvalidOption("schedule", "an interval must be at least 1 s")
        return cls._checked(cls("every", every_ms=wire.ms(interval), missed=missed,
                                missed_max=_max(missed, missed_max), priority=priority))

    @classmethod
    def _checked(cls, s):
        if s.missed not in MISSED:
            raise InvalidOption("schedule", "missed is skip, once or all")
        if s.missed == "all" and (not isinstance(s.missed_max, int) or s.missed_max < 1):
            raise InvalidOption("schedule", 'missed="all" needs missed_max of at least 1')
        if not isinstance(s.priority, int) or not 0 <= s.priority < _keys.LEVELS:
            raise InvalidOption("schedule", "priority levels are 0 to 15")
        # Reading the next fire time checks the zone and the expression too.
        if s.kind == "cron" and s.next_after(now_ms()) is None:
            raise InvalidOption("schedule", "it never fires after now")
        return s

    def fields(self):
        """Its fields in the schedule's hash (SPEC.md section 6e)."""
        f = {"missed": self.missed, "missed_max": self.missed_max, "priority": self.priority, "kind": self.kind}
        if self.kind == "cron":
            f.update(cron=self.expr, tz=self.tz)
        else:
            f["every_ms"] = self.every_ms
        return f

    @classmethod
    def from_fields(cls, f):
        """A definition read back from its hash fields (text), or None if it does not read as one."""
        try:
            missed = f.get("missed", "once")
            common = dict(missed=missed, missed_max=int(f.get("missed_max", 1)), priority=int(f.get("priority", 0)))
            if missed not in MISSED:
                return None
            if f.get("kind") == "cron" and f.get("cron") is not None:
                return cls("cron", expr=f["cron"], tz=f.get("tz", "UTC"), **common)
            if f.get("kind") == "every" and f.get("every_ms") is not None:
                return cls("every", every_ms=int(f["every_ms"]), **common)
        except ValueError:
            pass
        return None

    def describe(self):
        if self.kind == "cron":
            return f"cron {self.expr} {self.tz}"
        return f"every {self.every_ms / 1000:g}s"

    def next_after(self, after_ms):
        """The first fire time after ``after_ms`` (ms), or None if it never fires again. Raises ``InvalidOption``
        for a cron expression or zone this package cannot read (one a newer croner reads, say)."""
        if self.kind == "every":
            return after_ms + self.every_ms
        zone = _zone(self.tz)
        fixed = _fixed_time(self.expr)
        after_s = after_ms // 1000
        # croniter walks wall-clock times with no zone; each is then placed in the zone as croner places it.
        wall = datetime.fromtimestamp(after_s, zone).replace(tzinfo=None)
        try:
            it = _cron_lib()(_for_croniter(self.expr), wall, second_at_beginning=len(self.expr.split()) == 6)
            for _ in range(100_000):
                n = it.get_next(datetime)
                at = _place(zone, calendar.timegm(n.timetuple()), fixed)
                if at is not None and at > after_s:
                    return at * 1000
        except InvalidOption:
            raise
        except Exception as e:  # croniter gives up on expressions that never match
            if "failed to find" in str(e).lower():
                return None
            raise InvalidOption("schedule", f"not a cron expression croniter reads: {self.expr!r}") from e
        return None

    def plan(self, t_ms, now):
        """What a worker firing at ``now`` (ms) does with next fire time ``t_ms``: ``(fire times to enqueue,
        next fire time)``. Every fire time from ``t_ms`` up to ``now`` is due; one due time, on time, fires;
        otherwise the missed policy picks (SPEC.md section 6e)."""
        if self.kind == "every":
            step = max(self.every_ms, 1)
            behind = max(now - t_ms, 0) // step
            keep = min(behind, MAX_CATCH_UP - 1)
            due = [t_ms + k * step for k in range(behind - keep, behind + 1)]
            nxt = t_ms + (behind + 1) * step
        else:
            due = [t_ms]
            nxt = self.next_after(t_ms)
            while nxt is not None and nxt <= now:
                due.append(nxt)
                if len(due) > MAX_CATCH_UP:
                    del due[0]
                nxt = self.next_after(nxt)
            if nxt is None:
                nxt = NEVER
        newest = due[-1]
        on_time = now - newest <= ON_TIME_MS
        if len(due) == 1 and on_time:
            fires = due
        elif self.missed == "skip":
            fires = [newest] if on_time else []
        elif self.missed == "once":
            fires = [newest]
        else:
            fires = due[max(len(due) - self.missed_max, 0):]
        return fires, nxt


def _max(missed, missed_max):
    if missed_max is not None:
        return missed_max
    return {"skip": 0, "once": 1}.get(missed, 0)


@dataclass(frozen=True)
class ScheduleInfo:
    """One schedule as stored: ``next_ms`` is None while paused or if it never fires again."""

    name: str
    schedule: Schedule
    payload: bytes
    paused: bool
    next_ms: Optional[int]
    last_fire_ms: Optional[int]
    fired: int

    def decoded_payload(self):
        return wire.decode(self.payload)


class Scheduling:
    """Managing a queue's schedules (a mixin of ``Queue``; each change atomic, as SPEC.md section 6e writes)."""

    def schedule(self, name, schedule, data=None):
        """Adds schedule ``name``, or replaces its definition and data (its counters stay; a paused schedule stays
        paused). Each fire enqueues ``data`` as a plain job with headers ``x-schedule`` and ``x-fire-ms``."""
        _keys.validate_name(name)
        if not isinstance(schedule, Schedule):
            raise InvalidOption("schedule", "use Schedule.cron(...) or Schedule.every(...)")
        payload = wire.encode(data, self.client.max_payload)
        now = now_ms()
        nxt = schedule.next_after(now)
        if nxt is None:
            raise InvalidOption("schedule", "it never fires after now")
        key = self.keys.schedule(name)
        paused = self.redis.hget(key, "paused") == b"1"
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"payload": payload, "next_ms": nxt, "updated_ms": now, **schedule.fields()})
        pipe.hsetnx(key, "created_ms", now)
        pipe.zadd(self.keys.schedules, {name: "+inf" if paused else nxt})
        pipe.execute()
        self.client.list_queue(self.keys)
        return self.schedule_info(name)

    def schedules(self):
        """Every schedule of this queue, by name."""
        names = sorted(text(n) for n in self.redis.zrange(self.keys.schedules, 0, -1))
        return [i for i in (self.schedule_info(n) for n in names) if i is not None]

    def schedule_info(self, name):
        """Schedule ``name`` as stored, or None."""
        raw = self.redis.hgetall(self.keys.schedule(name))
        f = {text(k): text(v) for k, v in raw.items() if k != b"payload"}
        s = Schedule.from_fields(f)
        if s is None:
            return None

        def num(k):
            try:
                return int(f[k])
            except (KeyError, ValueError):
                return None

        paused = f.get("paused") == "1"
        nxt = num("next_ms")
        return ScheduleInfo(name=name, schedule=s, payload=raw.get(b"payload", b""), paused=paused,
                            next_ms=None if paused or nxt == NEVER else nxt, last_fire_ms=num("last_fire_ms"),
                            fired=num("fired") or 0)

    def pause_schedule(self, name):
        """Pauses schedule ``name`` (it fires nothing until resumed). Returns whether it exists."""
        return self._set_schedule_state(name, {"paused": 1}, "+inf")

    def resume_schedule(self, name):
        """Resumes schedule ``name`` from its next fire time after now. Returns whether it exists."""
        info = self.schedule_info(name)
        if info is None:
            return False
        nxt = info.schedule.next_after(now_ms())
        nxt = NEVER if nxt is None else nxt
        return self._set_schedule_state(name, {"paused": 0, "next_ms": nxt}, nxt)

    def remove_schedule(self, name):
        """Removes schedule ``name`` (jobs it enqueued stay). Returns whether it existed."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.schedules, name)
        pipe.delete(self.keys.schedule(name))
        removed, _ = pipe.execute()
        return removed > 0

    def _set_schedule_state(self, name, fields, score):
        # WATCH the hash: a schedule removed meanwhile must not come back as a stray member and half a hash.
        key = self.keys.schedule(name)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if not pipe.exists(key):
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.hset(key, mapping=fields)
                    pipe.zadd(self.keys.schedules, {name: score})
                    pipe.execute()
                    return True
                except _WatchError:
                    continue


SCHEDULES_PER_WAKE = 16


def fire_due(r, scripts, k, events_maxlen, now, log):
    """Fires the schedules of queue keys ``k`` due at ``now`` (this host's clock, ms) through ``fire.lua``.
    Returns how long (seconds) to hold off when the server's clock says one is not due yet, else None."""
    for name, t in r.zrangebyscore(k.schedules, "-inf", now, start=0, num=SCHEDULES_PER_WAKE, withscores=True):
        name, t = text(name), int(t)
        raw = r.hmget(k.schedule(name), FIELDS)
        s = Schedule.from_fields({f: text(v) for f, v in zip(FIELDS, raw) if v is not None})
        if s is None:
            # Written by something that does not follow SPEC.md section 6e: moved to "never" (fire.lua drops a
            # member without a hash), as every rill worker does.
            log.warning("rill: schedule %s of %s is unreadable: it will not fire", name, k.queue)
        clock = now
        for _ in range(2):  # on this host's clock, then (if that runs ahead) on the server's
            try:
                fires, nxt = s.plan(t, clock) if s is not None else ([], NEVER)
            except InvalidOption as e:
                # A cron expression croniter cannot read (croner can): left to the workers that can fire it.
                log.warning("rill: schedule %s of %s left to other workers: %s", name, k.queue, e)
                break
            code, _jobs, server_now = scripts["fire.lua"](
                keys=[k.schedules, k.schedule(name), k.ready, k.events] + k.level_tail(),
                args=[name, t, nxt, events_maxlen] + fires)
            server_now = int(server_now)
            if code == -1 and t <= server_now and clock != server_now:
                clock = server_now  # due by the server's clock, but this host's asked for later times too
                continue
            if code == -1:
                return min(max(t - server_now, 10), 1000) / 1000
            break
    return None
