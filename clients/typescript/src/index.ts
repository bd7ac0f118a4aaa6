/** rill: a job queue native to Redis Streams. This package produces and inspects jobs on the same queues as rill's
 * Rust library, CLI and Python package, by the wire format and scripts of SPEC.md. */

export { Client, type ClientOptions } from "./client.js";
export {
  Interrupted, InvalidJobId, InvalidName, InvalidOption, NoSuchPriority, Partitioned, PayloadTooLarge, Permanent, ProtocolError,
  Retry, RillError,
} from "./errors.js";
export { GROUP, QueueKeys, validateJobId, validateName } from "./keys.js";
export { Partitions, fnv1a32 } from "./partition.js";
export {
  Queue, DEFAULT_DEDUP_TTL_MS, type Counts, type EnqueueOptions, type EnqueueOutcome, type JobInfo, type JobState,
} from "./queue.js";
export {
  Schedule, NEVER, ON_TIME_MS, schedulePayload, type Missed, type ScheduleInfo, type ScheduleOptions,
} from "./schedule.js";
export { decode, encode, DEFAULT_MAX_PAYLOAD } from "./wire.js";
export { Worker, type Handler, type WorkerOptions } from "./worker.js";
export { type Checkpoint, type Job } from "./job.js";
