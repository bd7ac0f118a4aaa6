/** The one place that builds Redis keys (SPEC.md sections 1 and 2). Every key of a queue carries the hash tag
 * `{queue}`, so a queue's keys share one Redis Cluster slot and every script runs unchanged on a cluster. */

import { InvalidJobId, InvalidName } from "./errors.js";

/** The consumer group every worker of a queue joins. */
export const GROUP = "workers";
export const DEFAULT_NAMESPACE = "rill";
/** Most priority levels a queue can have (0 to 15). */
export const LEVELS = 16;

const NAME = /^[A-Za-z0-9._-]+$/;

/** Checks a queue name or namespace: 1-128 bytes of ASCII letters, digits, '.', '_' and '-'. */
export function validateName(name: string): void {
  if (typeof name !== "string" || name.length === 0) throw new InvalidName(String(name), "empty");
  if (Buffer.byteLength(name) > 128) throw new InvalidName(name, "longer than 128 bytes");
  if (name.includes("{") || name.includes("}"))
    throw new InvalidName(name, "contains a brace, which would change the Redis Cluster hash tag");
  if (name.includes(":")) throw new InvalidName(name, "contains ':', the key separator");
  if (!NAME.test(name)) throw new InvalidName(name, "only ASCII letters, digits, '.', '_' and '-' are allowed");
}

/** Checks a caller's job id or dedup key: 1-256 bytes of UTF-8 without whitespace or control characters. */
export function validateJobId(id: string): void {
  if (typeof id !== "string" || id.length === 0) throw new InvalidJobId(String(id), "empty");
  if (Buffer.byteLength(id) > 256) throw new InvalidJobId(id, "longer than 256 bytes");
  if (/[\s\u0000-\u001f\u007f-\u009f]/u.test(id))
    throw new InvalidJobId(id, "contains whitespace or a control character");
}

/** All the keys of one queue (SPEC.md section 2). */
export class QueueKeys {
  readonly prefix: string;
  readonly ready: string;
  readonly delayed: string;
  readonly scheduled: string;
  readonly index: string;
  readonly dead: string;
  readonly dead_index: string;
  readonly events: string;
  readonly signals: string;
  readonly outcomes: string;
  readonly paused: string;
  readonly parked: string;
  readonly workers: string;
  readonly heartbeats: string;
  readonly schedules: string;
  readonly limit: string;
  readonly limit_starts: string;
  readonly held: string;
  readonly key_ring: string;
  readonly key_queued: string;
  readonly key_running: string;
  readonly key_starts: string;
  readonly priorities: string;
  readonly config: string;
  readonly queues: string;

  constructor(readonly namespace: string, readonly queue: string, tag?: string) {
    validateName(namespace);
    validateName(queue);
    const p = `${namespace}:{${tag ?? queue}}`;
    this.prefix = p;
    this.ready = `${p}:ready`;
    this.delayed = `${p}:delayed`;
    this.scheduled = `${p}:scheduled`;
    this.index = `${p}:index`;
    this.dead = `${p}:dead`;
    this.dead_index = `${p}:dead:index`;
    this.events = `${p}:events`;
    this.signals = `${p}:signals`;
    this.outcomes = `${p}:signals:outcomes`;
    this.paused = `${p}:paused`;
    this.parked = `${p}:parked`;
    this.workers = `${p}:workers`;
    this.heartbeats = `${p}:heartbeats`;
    this.schedules = `${p}:schedules`;
    this.limit = `${p}:limit`;
    this.limit_starts = `${p}:limit:starts`;
    this.held = `${p}:held`;
    this.key_ring = `${p}:keys:ring`;
    this.key_queued = `${p}:keys:queued`;
    this.key_running = `${p}:keys:running`;
    this.key_starts = `${p}:keys:starts`;
    this.priorities = `${p}:priorities`;
    this.config = `${p}:config`;
    this.queues = `${namespace}:queues`;
  }

  /** The stream of priority level `level` (0 is `ready`; past the last, the last). */
  /** The keys of the partition with hash tag `tag` of this partitioned queue (SPEC.md section 2a). */
  partition(tag: string): QueueKeys {
    return new QueueKeys(this.namespace, this.queue, tag);
  }

  level(level: number): string {
    const p = Math.min(Math.max(Math.trunc(level), 0), LEVELS - 1);
    return p === 0 ? this.ready : `${this.ready}:${p}`;
  }

  /** The last KEYS of the scripts that route or find jobs by level: the priorities hash, the streams of levels 1
   * to 15, then the held set of per-key limits (SPEC.md section 6). */
  levelTail(): string[] {
    const out = [this.priorities];
    for (let p = 1; p < LEVELS; p++) out.push(this.level(p));
    out.push(this.held);
    return out;
  }

  job(id: string): string {
    return `${this.prefix}:job:${id}`;
  }
  checkpoints(id: string): string {
    return `${this.prefix}:ckpt:${id}`;
  }
  dedup(key: string): string {
    return `${this.prefix}:dedup:${key}`;
  }
  worker(consumer: string): string {
    return `${this.prefix}:worker:${consumer}`;
  }
  schedule(name: string): string {
    return `${this.prefix}:schedule:${name}`;
  }
}
