/** The state every part of a worker shares, and the small helpers on it: options, keys, the deliveries it holds
 * and its slots, the queue's priority levels. The parts build on it in layers, one role each: `Settling` ends
 * deliveries, `Upkeep` keeps them and the queue healthy, `Listening` follows signals, `Worker` claims and runs. */

import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { Client } from "../client.js";
import { InvalidOption } from "../errors.js";
import type { Envelope, Job } from "../job.js";
import { GROUP, type QueueKeys } from "../keys.js";

export const CRASH_AFTER_MS = 3000;
export const RECORD_TTL_MS = 24 * 3600 * 1000;
export const HEARTBEATS_MAXLEN = 10_000;
export const CHECKPOINT_KEEP = 10;
export const CHECKPOINT_TTL_MS = 7 * 24 * 3600 * 1000;
export const CHECKPOINT_MAX = 1024 * 1024;

export type Handler<T> = (job: Job<T>) => unknown;

export interface WorkerOptions<T> {
  /** Handlers running at once (default 8). */
  concurrency?: number;
  /** The lease this worker offers if the queue has none yet (default 5 s); it uses the queue's. */
  leaseMs?: number;
  /** Attempts for jobs that do not set their own (default 5). */
  maxAttempts?: number;
  /** Backoff before the n-th retry: backoffMs × 2^(n-1), at most maxBackoffMs, with jitter (default 1 s, 1 h). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** How long a read blocks (default 2 s). */
  blockMs?: number;
  /** Time limit of an attempt for jobs without their own (default none). */
  timeoutMs?: number;
  /** Checks or converts a decoded payload; throwing dead-letters the entry as malformed. */
  check?: (payload: unknown) => T;
  retentionMs?: number;
  eventsMaxlen?: number;
  consumer?: string;
  reclaimEveryMs?: number;
}

export interface Delivery {
  stream: string;
  address: string;
  env: Envelope;
  token: number;
  maxAttempts: number;
  abort: AbortController;
  /** Aborted when the job should checkpoint and yield. */
  stopping: AbortController;
  /** A pause of this job asked: parked, not handed back, when it yields. */
  parkRequested: boolean;
  renewed: number;
  startedMs: number;
  lost: boolean;
  settling: boolean;
  cancelRequested: boolean;
  touched: boolean;
  /** Its handler slot is free again (the handler returned, or the delivery was given up or timed out). */
  slotFreed: boolean;
}

export type Outcome =
  | { kind: "ok"; result: unknown }
  | { kind: "retry"; error: string; afterMs?: number }
  | { kind: "dead"; error: string }
  | { kind: "cancel"; error: string }
  | { kind: "park" }
  | { kind: "hand back" };

export const sleep = (ms: number) => new Promise<void>((res) => setTimeout(res, ms));
export type Raw = Buffer[] | null;

/** A worker's shared state (see `Worker`). */
export abstract class WorkerCore<T> {

  readonly consumer: string;
  readonly keys: QueueKeys;
  completed = 0;
  failed = 0;
  dead = 0;
  leaseFailures = 0;
  leaseMs: number;
  protected readonly o: Required<Omit<WorkerOptions<T>, "timeoutMs" | "check" | "consumer">> & WorkerOptions<T>;
  protected readonly redis: Redis;
  protected readonly held = new Map<string, Delivery>();
  protected readonly running = new Set<Promise<void>>();
  protected stopping = false;
  protected paused = false;
  protected quiet = false;
  protected limited = false;
  protected levels = 1;
  protected weights: number[] | undefined;
  protected credits: number[] = [0];
  protected crashed: string[] = [];
  protected registered = false;
  protected beatenFailures = 0;
  protected signalsAfter = "0-0";
  protected readonly startedMs = Date.now();
  protected loops: Promise<void>[] = [];
  protected conns: Redis[] = [];
  protected wake: () => void = () => {};
  protected active = 0;
  /** When the last beat that landed was sent. */
  protected beatLanded = Date.now();
  /** After a read was given up on, until when to release what Redis assigns this worker late. */
  protected releaseUntil = 0;
  protected acks: { d: Delivery; data: Buffer; resolve: () => void; reject: (e: unknown) => void }[] = [];
  protected ackScheduled = false;
  protected done: Promise<void> | undefined;

  constructor(readonly client: Client, queue: string, readonly handler: Handler<T>, options: WorkerOptions<T> = {}) {
    this.keys = client.queue(queue).keys;
    this.o = {
      concurrency: 8, leaseMs: 5000, maxAttempts: 5, backoffMs: 1000, maxBackoffMs: 3_600_000, blockMs: 2000,
      retentionMs: RECORD_TTL_MS, eventsMaxlen: 10_000, reclaimEveryMs: 1000, ...options,
    };
    if (!(this.o.concurrency >= 1)) throw new InvalidOption("concurrency", "at least 1");
    this.leaseMs = this.o.leaseMs;
    this.consumer = options.consumer ?? `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
    this.redis = client.redis;
  }

  protected async createGroups(): Promise<void> {
    for (const s of this.streams()) {
      try {
        await this.redis.xgroup("CREATE", s, GROUP, "0", "MKSTREAM");
      } catch (e) {
        if (!(e instanceof Error && e.message.includes("BUSYGROUP"))) throw e;
      }
    }
  }

  protected setLevels(levels: string, weights: string): boolean {
    const n = Math.max(1, Math.min(Number(levels || 1), 16));
    let w: number[] | undefined = weights ? weights.split(",").map(Number) : undefined;
    if (w && w.length !== n) w = undefined;
    if (n === this.levels && JSON.stringify(w) === JSON.stringify(this.weights)) return false;
    this.levels = n;
    this.weights = w;
    this.credits = new Array(n).fill(0);
    return true;
  }

  protected streams(): string[] {
    return Array.from({ length: this.levels }, (_, p) => this.keys.level(p));
  }

  protected suffix(stream: string): string {
    return stream === this.keys.ready ? "" : "@" + stream.slice(stream.lastIndexOf(":") + 1);
  }

  /** Free handler slots. A slot frees when its handler returns, before the completion reaches Redis (acks go
   * in batches), so reads overlap acks; renewals go on until the delivery is settled. */
  protected free(): number {
    return Math.max(0, this.o.concurrency - this.active);
  }

  protected freeSlot(d: Delivery): void {
    if (d.slotFreed) return;
    d.slotFreed = true;
    this.active--;
    this.wake();
  }

  protected track(p: Promise<void>): void {
    const q = p.catch((e) => console.warn(`rill: ${e}`)).finally(() => {
      this.running.delete(q);
      this.wake();
    });
    this.running.add(q);
  }

  /** Asks every running job to checkpoint and yield. */
  protected askToYield(): void {
    for (const d of this.held.values()) d.stopping.abort(new Error("stopping"));
  }

  /** Checks and starts one delivery (the claiming part's). */
  protected abstract dispatch(stream: string, eid: string, flat: Raw, token: number): void;
}


export function pairs(flat: Buffer[]): [Buffer, Buffer][] {
  const out: [Buffer, Buffer][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}
