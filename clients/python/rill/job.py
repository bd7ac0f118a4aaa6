"""A job as a worker sees it, and the checks an entry must pass first (SPEC.md section 3): a refused entry is
dead-lettered with its reason, never run and never dropped."""

import io
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import cbor2

from . import keys as _keys
from . import wire
from .errors import InvalidJobId

MAX_ATTEMPTS = 1_000_000
MAX_TIMEOUT_MS = 366 * 24 * 3600 * 1000
MAX_ENQUEUED_MS = 16_725_225_600_000  # year ~2500: anything later is a unit mistake
KNOWN = ("v", "payload", "id", "attempts", "max_attempts", "timeout_ms", "priority", "enqueued_ms", "last_error")


class Refused(Exception):
    """An entry that breaks SPEC.md section 3: ``reason`` is the dead-letter reason (``malformed`` or
    ``too_large``)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


@dataclass
class Envelope:
    """An entry that passed the checks (its payload not yet decoded)."""

    entry_id: str
    job_id: str
    payload: bytes
    attempts: int
    max_attempts: Optional[int]
    timeout_ms: Optional[int]
    priority: int
    enqueued_ms: int
    last_error: Optional[str]
    headers: Dict[str, bytes] = field(default_factory=dict)


def _utf8(name, value):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("malformed", f"field `{name}` is not valid UTF-8") from None


def _decimal(name, value, most):
    s = _utf8(name, value)
    if not s or len(s) > 20 or not all("0" <= c <= "9" for c in s):
        raise Refused("malformed", f"field `{name}` must be a non-negative decimal integer, got {s[:40]!r}")
    n = int(s)
    if n > most:
        raise Refused("malformed", f"field `{name}` is out of range (max {most}), got {s[:40]!r}")
    return n


def job_id_of(entry_id, fields, suffix=""):
    """The job id an entry names in exactly one valid ``id`` field, else its entry id (``suffix``: ``@<p>`` on
    the stream of level p) (SPEC.md section 5)."""
    ids = [v for k, v in fields if k == b"id"]
    if len(ids) == 1:
        try:
            jid = ids[0].decode("utf-8")
            _keys.validate_job_id(jid)
            return jid
        except (UnicodeDecodeError, InvalidJobId):
            pass
    return entry_id + suffix


def parse_entry(entry_id, fields: List[Tuple[bytes, bytes]], max_payload=wire.DEFAULT_MAX_PAYLOAD,
                suffix="") -> Envelope:
    """Checks a raw entry (its field list as Redis gave it: a field may appear twice) against SPEC.md v1.
    ``suffix`` is ``@<p>`` on the stream of priority level p (an unnamed job's id there is ``<entry id>@<p>``)."""
    if fields is None:
        raise Refused("malformed", "entry was deleted while pending")
    seen: Dict[str, bytes] = {}
    headers: Dict[str, bytes] = {}
    for k, v in fields:
        try:
            name = k.decode("utf-8") if isinstance(k, bytes) else k
        except UnicodeDecodeError:
            raise Refused("malformed", "a field name is not valid UTF-8") from None
        if name.startswith("x-"):
            headers[name] = v
            continue
        if name not in KNOWN:
            raise Refused("malformed", f"unknown field {name[:64]!r} (format v1 allows only the SPEC.md fields "
                                       "and `x-` extensions)".replace("'", '"'))
        if name in seen:
            raise Refused("malformed", f"field `{name}` appears twice")
        seen[name] = v
    if "v" not in seen:
        raise Refused("malformed", "missing field `v` (format version)")
    v = _utf8("v", seen["v"])
    if v != "1":
        raise Refused("malformed", f"unsupported format version {v[:20]!r} (this worker reads version 1)")
    if "payload" not in seen:
        raise Refused("malformed", "missing field `payload`")
    payload = seen["payload"]
    if len(payload) > max_payload:
        raise Refused("too_large", f"payload of {len(payload)} bytes exceeds the limit of {max_payload} bytes")
    if not payload:
        raise Refused("malformed", "field `payload` is empty (not CBOR)")
    job_id = entry_id + suffix
    if "id" in seen:
        job_id = _utf8("id", seen["id"])
        try:
            _keys.validate_job_id(job_id)
        except InvalidJobId as e:
            raise Refused("malformed", f"field `id`: {e}") from None
    attempts = _decimal("attempts", seen["attempts"], MAX_ATTEMPTS) if "attempts" in seen else 0
    max_attempts = None
    if "max_attempts" in seen:
        max_attempts = _decimal("max_attempts", seen["max_attempts"], MAX_ATTEMPTS)
        if max_attempts == 0:
            raise Refused("malformed", "field `max_attempts` must be at least 1")
    timeout_ms = None
    if "timeout_ms" in seen:
        timeout_ms = _decimal("timeout_ms", seen["timeout_ms"], MAX_TIMEOUT_MS)
        if timeout_ms == 0:
            raise Refused("malformed", "field `timeout_ms` must be at least 1")
    priority = _decimal("priority", seen["priority"], _keys.LEVELS - 1) if "priority" in seen else 0
    entry_ms = int(entry_id.split("-", 1)[0])
    enqueued = _decimal("enqueued_ms", seen["enqueued_ms"], MAX_ENQUEUED_MS) if "enqueued_ms" in seen else entry_ms
    last_error = seen["last_error"].decode("utf-8", "replace") if "last_error" in seen else None
    return Envelope(entry_id, job_id, payload, attempts, max_attempts, timeout_ms, priority, enqueued, last_error,
                    headers)


def decode_payload(env: Envelope, decode: Optional[Callable[[Any], Any]] = None):
    """The payload as one CBOR value (``decode`` then checks or converts it: raising refuses the entry); bytes after
    that value refuse it too (SPEC.md section 3). The type is checked first, as the Rust worker does."""
    f = io.BytesIO(env.payload)
    try:
        value = cbor2.CBORDecoder(f).decode()
    except Exception as e:  # cbor2 raises several kinds; all mean the same here
        raise Refused("malformed", f"payload does not decode: {e}") from None
    if decode is not None:
        try:
            value = decode(value)
        except Exception as e:
            raise Refused("malformed", f"payload does not decode as the job type: {e}") from None
    if f.tell() != len(env.payload):
        raise Refused("malformed", f"trailing bytes: {len(env.payload) - f.tell()} after the CBOR value")
    return value


class Job:
    """What a handler gets: ``id``, ``attempt`` (1 for the first), ``payload`` (decoded), ``headers``,
    ``max_attempts``, ``cancelled`` (an Event set when the job is cancelled, its lease is lost or it times out: a
    long handler should check ``cancelled.is_set()`` and return early), and ``stopping`` (set when the job should
    checkpoint and yield: the worker stops, the queue is paused, the worker quieted, or the job paused by a signal;
    raise ``rill.Interrupted`` after the checkpoint)."""

    def __init__(self, delivery, payload):
        env = delivery.envelope
        self.id = env.job_id
        self.entry_id = env.entry_id
        self.attempt = env.attempts + delivery.token
        self.max_attempts = delivery.max_attempts
        self.payload = payload
        self.headers = env.headers
        self.last_error = env.last_error
        self.cancelled = delivery.cancelled
        self.stopping = delivery.stopping
        self._delivery = delivery

    def header(self, name):
        return self.headers.get(name)

    @property
    def schedule(self):
        """For a job a schedule enqueued: ``(schedule name, fire time ms)`` from ``x-schedule`` and
        ``x-fire-ms``; else None."""
        name, at = self.headers.get("x-schedule"), self.headers.get("x-fire-ms")
        try:
            return (name.decode(), int(at)) if name is not None and at is not None else None
        except (UnicodeDecodeError, ValueError):
            return None

    def progress(self, value):
        """Records the job's progress (any CBOR value) in its record; ``False`` if this delivery no longer owns
        the job (it was reclaimed or cancelled)."""
        return self._delivery.worker._update(self._delivery, "progress", value)

    def checkpoint(self, state, label=""):
        """Saves ``state`` (any CBOR value) so a later delivery of this job resumes from it (SPEC.md section 6a).
        Returns its version, or ``None`` if this delivery no longer owns the job (write nothing more then).

        Raises ``PayloadTooLarge`` for a state over the worker's checkpoint limit."""
        return self._delivery.worker._checkpoint(self._delivery, state, label)

    def resume(self):
        """The newest checkpoint of this job, as ``Checkpoint(version, state, label, ms)``, or ``None``: where a
        previous delivery (crashed, timed out, handed back) left off."""
        return self._delivery.worker._last_checkpoint(self._delivery)


@dataclass(frozen=True)
class Checkpoint:
    version: int
    state: Any
    label: str
    ms: int


class Delivery:
    """One delivery a worker holds: its entry, token (delivery count) and state."""

    def __init__(self, worker, stream, envelope: Envelope, token, max_attempts):
        self.worker = worker
        self.stream = stream
        self.envelope = envelope
        self.token = token
        self.max_attempts = max_attempts
        self.cancelled = threading.Event()
        self.stopping = threading.Event()
        self.park_requested = False
        self.renewed = 0.0  # monotonic time the last successful renewal was sent
        self.lost = False
        self.settling = False
        self.started_ms = 0
        self.cancel_requested = False
        self.address = envelope.entry_id  # the entry id, with `@<p>` on the stream of level p
        self.touched = False  # wrote its record or a checkpoint: ack.lua then expires them with the record
