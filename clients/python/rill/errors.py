"""rill's errors. Infrastructure errors derive from ``RillError``; a handler's own outcomes (``Retry``,
``Permanent``) are separate: they say what to do with a job, not that something broke."""


def _quoted(text):
    """``text`` in double quotes, as rill's other clients write names in errors."""
    if not isinstance(text, str):
        return repr(text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RillError(Exception):
    """Any error of the rill client (Redis errors pass through as redis-py raises them)."""


class InvalidName(RillError, ValueError):
    def __init__(self, name, reason):
        super().__init__(f"invalid name {_quoted(name)}: {reason}")
        self.name, self.reason = name, reason


class InvalidJobId(RillError, ValueError):
    def __init__(self, job_id, reason):
        super().__init__(f"invalid job id {_quoted(job_id)}: {reason}")
        self.job_id, self.reason = job_id, reason


class InvalidOption(RillError, ValueError):
    def __init__(self, option, reason):
        super().__init__(f"invalid {option}: {reason}")
        self.option, self.reason = option, reason


class PayloadTooLarge(RillError, ValueError):
    def __init__(self, size, limit):
        super().__init__(f"payload of {size} bytes is over the limit of {limit}")
        self.size, self.limit = size, limit


class NoSuchPriority(RillError, ValueError):
    def __init__(self, level, levels):
        super().__init__(f"priority {level} is not one of the queue's {levels} levels")
        self.level, self.levels = level, levels


class Partitioned(RillError):
    """The queue is partitioned (SPEC.md section 2a) and this call does not work on partitioned queues yet."""

    def __init__(self, queue, what):
        super().__init__(f"queue {queue!r} is partitioned: {what}")
        self.queue, self.what = queue, what


class Protocol(RillError):
    """Redis answered something SPEC.md does not allow (a script's unknown code, a malformed reply)."""

    def __init__(self, what, detail):
        super().__init__(f"{what}: {detail}")
        self.what, self.detail = what, detail


class Retry(Exception):
    """Raised by a handler: this attempt failed; retry it (after ``after`` seconds, else the worker's backoff)."""

    def __init__(self, message="", after=None):
        super().__init__(message)
        self.after = after


class Interrupted(Exception):
    """Raised by a handler that saw ``job.stopping``, saved a checkpoint and yields: the job goes back to the queue
    without counting an attempt (or, paused on its own by a signal, is parked until resumed), and the next delivery
    resumes from the checkpoint."""


class Permanent(Exception):
    """Raised by a handler: the job cannot succeed; dead-letter it now, whatever attempts are left."""
