/** rill's errors. Infrastructure errors extend `RillError`; a handler's own outcomes (`Retry`, `Permanent`) are
 * separate: they say what to do with a job, not that something broke. */

const quoted = (s: string) => JSON.stringify(s);

export class RillError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export class InvalidName extends RillError {
  constructor(readonly value: string, readonly reason: string) {
    super(`invalid name ${quoted(value)}: ${reason}`);
  }
}

export class InvalidJobId extends RillError {
  constructor(readonly value: string, readonly reason: string) {
    super(`invalid job id ${quoted(value)}: ${reason}`);
  }
}

export class InvalidOption extends RillError {
  constructor(readonly option: string, readonly reason: string) {
    super(`invalid ${option}: ${reason}`);
  }
}

export class PayloadTooLarge extends RillError {
  constructor(readonly size: number, readonly limit: number) {
    super(`payload of ${size} bytes is over the limit of ${limit}`);
  }
}

/** The queue is partitioned (SPEC.md section 2a) and this call does not work on partitioned queues yet. */
export class Partitioned extends RillError {
  constructor(readonly queue: string, readonly what: string) {
    super(`queue ${quoted(queue)} is partitioned: ${what}`);
  }
}

export class NoSuchPriority extends RillError {
  constructor(readonly level: number, readonly levels: number) {
    super(`priority ${level} is not one of the queue's ${levels} levels`);
  }
}

/** Redis answered something SPEC.md does not allow (a script's unknown code, a malformed reply). */
export class ProtocolError extends RillError {
  constructor(readonly what: string, readonly detail: string) {
    super(`${what}: ${detail}`);
  }
}

/** Thrown by a handler: this attempt failed; retry it (after `afterMs`, else the worker's backoff). */
export class Retry extends Error {
  constructor(message = "retry", readonly afterMs?: number) {
    super(message);
    this.name = "Retry";
  }
}

/** Thrown by a handler that saw `job.stopping`, saved a checkpoint and yields: the job goes back to the queue
 * without counting an attempt (or, paused on its own by a signal, is parked until resumed), and the next delivery
 * resumes from the checkpoint. */
export class Interrupted extends Error {
  constructor(message = "interrupted") {
    super(message);
    this.name = "Interrupted";
  }
}

/** Thrown by a handler: the job cannot succeed; dead-letter it now, whatever attempts are left. */
export class Permanent extends Error {
  constructor(message = "failed permanently") {
    super(message);
    this.name = "Permanent";
  }
}
