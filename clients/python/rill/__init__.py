"""rill: a job queue native to Redis Streams. This package produces and inspects jobs on the same queues as rill's
Rust library and CLI, by the wire format and scripts of SPEC.md.

    import rill
    client = rill.Client("redis://127.0.0.1:6379")
    emails = client.queue("emails")
    job_id = emails.enqueue({"to": "ada@example.com"}, id="welcome-ada", max_attempts=5)
    emails.state(job_id)        # "waiting", then "active", "completed", ...
    emails.result(job_id)       # the handler's result, decoded, once completed
"""

from .client import Client
from .errors import (Interrupted, InvalidJobId, InvalidName, InvalidOption, NoSuchPriority, Partitioned,
                     PayloadTooLarge, Permanent, Protocol, RillError, Retry)
from .keys import GROUP, QueueKeys
from .job import Checkpoint, Job
from .queue import DEFAULT_DEDUP_TTL, EnqueueOutcome, JobInfo, Queue
from .schedule import Schedule, ScheduleInfo
from .worker import Worker

__all__ = [
    "Client", "Queue", "QueueKeys", "GROUP", "EnqueueOutcome", "JobInfo", "DEFAULT_DEDUP_TTL",
    "RillError", "InvalidName", "InvalidJobId", "InvalidOption", "NoSuchPriority", "Partitioned", "PayloadTooLarge", "Protocol",
    "Retry", "Permanent", "Interrupted", "Worker", "Job", "Checkpoint", "Schedule", "ScheduleInfo",
]

__version__ = "0.1.0"
