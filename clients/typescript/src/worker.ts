/** `Worker`: runs a queue's jobs by SPEC.md section 9. Claims with XREADGROUP (level by level, or through
 * `limit.lua` under limits), checks each entry, renews leases on a timer the handlers cannot starve, finishes
 * through the fenced scripts (a delivery someone else took over writes nothing), takes back stalled jobs and adopts
 * crashed workers' ones, promotes due jobs, beats into the registry, follows signals, and hands back what is left
 * at shutdown. */

import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { Client } from "./client.js";
import { InvalidOption, Permanent, Retry, RillError } from "./errors.js";
import { type Checkpoint, type Envelope, type Job, Refused, decodePayload, jobIdOf, parseEntry } from "./job.js";
import { GROUP, type QueueKeys } from "./keys.js";
import { script, text } from "./scripts.js";
import { decode, encode } from "./wire.js";

const CRASH_AFTER_MS = 3000;
const RECORD_TTL_MS = 24 * 3600 * 1000;
const HEARTBEATS_MAXLEN = 10_000;
const CHECKPOINT_KEEP = 10;
const CHECKPOINT_TTL_MS = 7 * 24 * 3600 * 1000;
const CHECKPOINT_MAX = 1024 * 1024;

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

interface Delivery {
  stream: string;
  address: string;
  env: Envelope;
  token: number;
  maxAttempts: number;
  abort: AbortController;
  renewed: number;
  startedMs: number;
  lost: boolean;
  settling: boolean;
  cancelRequested: boolean;
  touched: boolean;
  /** Its handler slot is free again (the handler returned, or the delivery was given up or timed out). */
  slotFreed: boolean;
}

type Outcome =
  | { kind: "ok"; result: unknown }
  | { kind: "retry"; error: string; afterMs?: number }
  | { kind: "dead"; error: string }
  | { kind: "cancel"; error: string };

const sleep = (ms: number) => new Promise<void>((res) => setTimeout(res, ms));
type Raw = Buffer[] | null;

/** Runs `handler(job)` for the jobs of `queue`, up to `concurrency` at once. The handler's return value is the
 * job's result (any CBOR value; `undefined`/`null`: none); throwing `Retry` retries it (after `afterMs`, else the
 * backoff), `Permanent` dead-letters it now, anything else retries with backoff until its attempts run out.
 *
 * ```ts
 * const worker = new Worker(client, "emails", async (job) => send(job.payload), { concurrency: 16 });
 * const done = worker.run();
 * // ...
 * await worker.close();   // stop claiming, finish running jobs, hand back the rest
 * ```
 */
export class Worker<T = unknown> {
  readonly consumer: string;
  readonly keys: QueueKeys;
  completed = 0;
  failed = 0;
  dead = 0;
  leaseFailures = 0;
  leaseMs: number;
  private readonly o: Required<Omit<WorkerOptions<T>, "timeoutMs" | "check" | "consumer">> & WorkerOptions<T>;
  private readonly redis: Redis;
  private readonly held = new Map<string, Delivery>();
  private readonly running = new Set<Promise<void>>();
  private stopping = false;
  private paused = false;
  private quiet = false;
  private limited = false;
  private levels = 1;
  private weights: number[] | undefined;
  private credits: number[] = [0];
  private crashed: string[] = [];
  private registered = false;
  private beatenFailures = 0;
  private signalsAfter = "0-0";
  private readonly startedMs = Date.now();
  private loops: Promise<void>[] = [];
  private conns: Redis[] = [];
  private wake: () => void = () => {};
  private active = 0;
  /** When the last beat that landed was sent. */
  private beatLanded = Date.now();
  /** After a read was given up on, until when to release what Redis assigns this worker late. */
  private releaseUntil = 0;
  private acks: { d: Delivery; data: Buffer; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private ackScheduled = false;
  private done: Promise<void> | undefined;

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

  /** Works jobs until `close()` (or a `stop` signal); resolves once running jobs are done and the rest handed
   * back. */
  run(): Promise<void> {
    this.done ??= this.work();
    return this.done;
  }

  private async work(): Promise<void> {
    await this.start();
    const fetch = this.client.duplicate();
    const signals = this.client.duplicate();
    this.conns.push(fetch, signals);
    this.loops = [this.maintain(), this.listen(signals)];
    // On a timer of its own: a maintenance call stalled on Redis must not keep this check from running.
    const watch = setInterval(() => this.giveUpOverdue(), 50);
    try {
      while (!this.stopping) {
        const free = this.paused || this.quiet ? 0 : this.free();
        if (free === 0) {
          await new Promise<void>((res) => {
            this.wake = res;
            setTimeout(res, 50);
          });
          // Let the handlers that are finishing now finish too: one read for all their slots, not one each.
          await new Promise<void>((res) => setImmediate(res));
          continue;
        }
        let got: [string, Buffer[][]][];
        try {
          got = this.limited ? await this.readLimited(fetch, free) : await this.read(fetch, free);
        } catch (e) {
          if (this.stopping) break;
          if (e instanceof Error && e.message.includes("NOGROUP")) {
            await this.createGroups();
            continue;
          }
          console.warn(`rill: read failed (${e}); retrying`);
          // Redis may still run that read later and assign us entries nobody runs (SPEC.md section 9, step 6):
          // look for them for a minute.
          this.releaseUntil = Date.now() + 60_000;
          await sleep(500);
          continue;
        }
        for (const [stream, entries] of got) {
          if (this.paused || this.quiet || this.stopping) {
            // A read that was blocked when the queue paused: hand its entries back, uncounted.
            await this.release(stream, entries.map((e) => [text(e[0]), 1]));
            continue;
          }
          for (const e of entries) this.dispatch(stream, text(e[0]), e[1] as unknown as Raw, 1);
        }
      }
    } finally {
      this.stopping = true;
      await this.shutdown();
      clearInterval(watch);
    }
  }

  /** Stops claiming; resolves with `run()`, once running jobs are done and the rest handed back. */
  async close(): Promise<void> {
    this.stopping = true;
    this.wake();
    this.conns[0]?.disconnect(); // unblock the read
    await this.done?.catch(() => {});
  }

  private async start(): Promise<void> {
    const [levels, weights] = await this.redis.hmget(this.keys.priorities, "levels", "weights");
    this.setLevels(levels ?? "", weights ?? "");
    await this.createGroups();
    await this.redis.hsetnx(this.keys.config, "lease_ms", this.o.leaseMs);
    const stored = await this.redis.hget(this.keys.config, "lease_ms");
    if (stored) this.leaseMs = Number(stored);
    const limits = await this.redis.hmget(this.keys.limit, "rate", "concurrency", "key_field");
    this.limited = limits.some((x) => x !== null) || (await this.redis.zcard(this.keys.held)) > 0;
    this.paused = (await this.redis.exists(this.keys.paused)) === 1;
    const newest = await this.redis.xrevrange(this.keys.signals, "+", "-", "COUNT", 1);
    this.signalsAfter = newest[0]?.[0] ?? "0-0";
  }

  private async createGroups(): Promise<void> {
    for (const s of this.streams()) {
      try {
        await this.redis.xgroup("CREATE", s, GROUP, "0", "MKSTREAM");
      } catch (e) {
        if (!(e instanceof Error && e.message.includes("BUSYGROUP"))) throw e;
      }
    }
  }

  // Priority levels (SPEC.md section 6g)

  private setLevels(levels: string, weights: string): boolean {
    const n = Math.max(1, Math.min(Number(levels || 1), 16));
    let w: number[] | undefined = weights ? weights.split(",").map(Number) : undefined;
    if (w && w.length !== n) w = undefined;
    if (n === this.levels && JSON.stringify(w) === JSON.stringify(this.weights)) return false;
    this.levels = n;
    this.weights = w;
    this.credits = new Array(n).fill(0);
    return true;
  }

  private streams(): string[] {
    return Array.from({ length: this.levels }, (_, p) => this.keys.level(p));
  }

  private suffix(stream: string): string {
    return stream === this.keys.ready ? "" : "@" + stream.slice(stream.lastIndexOf(":") + 1);
  }

  private order(): string[] {
    const streams = this.streams();
    if (!this.weights) return streams;
    const total = this.weights.reduce((a, b) => a + b, 0);
    this.weights.forEach((w, i) => (this.credits[i] += w));
    let first = 0;
    for (let i = 1; i < streams.length; i++) if (this.credits[i] > this.credits[first]) first = i;
    this.credits[first] -= total;
    return [streams[first], ...streams.filter((_, i) => i !== first)];
  }

  private async read(conn: Redis, free: number): Promise<[string, Buffer[][]][]> {
    const order = this.order();
    const xread = async (streams: string[], count: number, block: boolean) => {
      const args: (string | number)[] = ["GROUP", GROUP, this.consumer, "COUNT", count];
      if (block) args.push("BLOCK", this.o.blockMs);
      args.push("STREAMS", ...streams, ...streams.map(() => ">"));
      const got = (await conn.callBuffer("XREADGROUP", ...args)) as [Buffer, Buffer[][]][] | null;
      return (got ?? []).map(([s, e]) => [text(s), e] as [string, Buffer[][]]);
    };
    if (order.length === 1) return await xread(order, free, true);
    const out: [string, Buffer[][]][] = [];
    let left = free;
    for (const s of order) {
      for (const [stream, entries] of await xread([s], left, false)) {
        out.push([stream, entries]);
        left -= entries.length;
      }
      if (left <= 0) return out;
    }
    if (out.length) return out;
    left = free;
    for (const [stream, entries] of await xread(order, free, true)) {
      const keep = entries.slice(0, Math.max(0, left));
      const extra = entries.slice(Math.max(0, left));
      left -= keep.length;
      if (keep.length) out.push([stream, keep]);
      if (extra.length) await this.release(stream, extra.map((e) => [text(e[0]), 1]));
    }
    return out;
  }

  /** Through `limit.lua` (SPEC.md sections 6f, 6h): it reads and counts in one step; with none, wait as it says. */
  private async readLimited(conn: Redis, free: number): Promise<[string, Buffer[][]][]> {
    const order = this.order();
    const k = this.keys;
    const [limited, read, waitRaw, after] = (await script("limit.lua").run(this.redis,
      [k.limit, k.limit_starts, order[0], k.events, k.held, k.key_ring, k.key_queued, k.key_running, k.key_starts,
        ...order.slice(1)], [GROUP, this.consumer, free])) as [number, [Buffer, Buffer[][]][], Buffer, unknown];
    const wait = text(waitRaw);
    if (Number(limited) === 0) {
      this.limited = false;
      return [];
    }
    if (wait === "") return read.map(([s, e]) => [text(s), e]);
    if (wait === "again") return [];
    if (wait === "rate") {
      await sleep(Number(text(after)));
      return [];
    }
    let streams: string[];
    let ids: string[];
    let block = this.o.blockMs;
    if (wait === "room") {
      streams = [k.events];
      ids = [text(after)];
      block = Math.min(block, 1000);
    } else if (wait === "entries") {
      streams = order;
      ids = (after as Buffer[]).map(text);
    } else if (wait === "keys") {
      ids = (after as Buffer[]).map(text);
      const wakeAt = Number(ids.pop());
      streams = [k.events, ...order];
      block = Math.min(block, 1000, wakeAt || 1000);
    } else {
      throw new RillError(`limit.lua answered the wait ${JSON.stringify(wait)}`);
    }
    await conn.xread("COUNT", 1, "BLOCK", Math.max(1, block), "STREAMS", ...streams, ...ids);
    return [];
  }

  /** Free handler slots. A slot frees when its handler returns, before the completion reaches Redis (acks go
   * in batches), so reads overlap acks; renewals go on until the delivery is settled. */
  private free(): number {
    return Math.max(0, this.o.concurrency - this.active);
  }

  private freeSlot(d: Delivery): void {
    if (d.slotFreed) return;
    d.slotFreed = true;
    this.active--;
    this.wake();
  }

  // One delivery

  private dispatch(stream: string, eid: string, flat: Raw, token: number): void {
    const fields = flat ? pairs(flat) : null;
    const suffix = this.suffix(stream);
    let env: Envelope;
    let payload: unknown;
    try {
      env = parseEntry(eid, fields, this.client.maxPayload, suffix);
      payload = decodePayload(env, this.o.check);
    } catch (e) {
      if (e instanceof Refused) {
        this.track(this.deadLetterRefused(stream, eid, fields ?? [], token, e));
        return;
      }
      throw e;
    }
    const d: Delivery = {
      stream, address: eid + suffix, env, token, maxAttempts: env.maxAttempts ?? this.o.maxAttempts,
      abort: new AbortController(), renewed: Date.now(), startedMs: Date.now(), lost: false, settling: false,
      cancelRequested: false, touched: false, slotFreed: false,
    };
    this.held.set(d.address, d);
    this.active++;
    this.track(this.runOne(d, payload as T));
  }

  private track(p: Promise<void>): void {
    const q = p.catch((e) => console.warn(`rill: ${e}`)).finally(() => {
      this.running.delete(q);
      this.wake();
    });
    this.running.add(q);
  }

  private job(d: Delivery, payload: T): Job<T> {
    const worker = this;
    return {
      id: d.env.jobId,
      entryId: d.env.entryId,
      attempt: d.env.attempts + d.token,
      maxAttempts: d.maxAttempts,
      payload,
      headers: d.env.headers,
      lastError: d.env.lastError,
      signal: d.abort.signal,
      header: (name) => d.env.headers[name]?.toString("utf8"),
      progress: (value) => worker.update(d, "progress", value),
      checkpoint: (state, label = "") => worker.checkpoint(d, state, label),
      resume: () => worker.lastCheckpoint(d),
    };
  }

  private async runOne(d: Delivery, payload: T): Promise<void> {
    const limit = d.env.timeoutMs ?? this.o.timeoutMs;
    const timers: NodeJS.Timeout[] = [];
    if (limit) {
      // At the deadline the handler is asked to stop; shortly after, the attempt fails whether or not it returned,
      // and its slot and lease go (a late return is ignored).
      timers.push(setTimeout(() => d.abort.abort(new Error("timeout")), limit));
      timers.push(setTimeout(() => void this.settle(d, {
        kind: "retry", error: `timeout: the attempt ran past its ${limit} ms limit`,
      }), limit + this.leaseMs / 6));
    }
    let outcome: Outcome;
    try {
      outcome = { kind: "ok", result: await this.handler(this.job(d, payload)) };
    } catch (e) {
      const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      if (e instanceof Permanent) outcome = { kind: "dead", error: e.message };
      else if (d.cancelRequested) outcome = { kind: "cancel", error: `cancelled (${message})` };
      else if (e instanceof Retry) outcome = { kind: "retry", error: e.message, afterMs: e.afterMs };
      else outcome = { kind: "retry", error: message };
    } finally {
      timers.forEach(clearTimeout);
      this.freeSlot(d);
    }
    if (limit && d.abort.signal.aborted && outcome.kind !== "ok" && !d.lost && !d.cancelRequested) {
      outcome = { kind: "retry", error: `timeout: the attempt ran past its ${limit} ms limit (${"error" in outcome ? outcome.error : ""})` };
    }
    await this.settle(d, outcome);
  }

  private async settle(d: Delivery, outcome: Outcome): Promise<void> {
    if (this.held.get(d.address) !== d || d.settling || d.lost) return; // given up, or settled already
    d.settling = true;
    try {
      if (outcome.kind === "ok") await this.ack(d, outcome.result);
      else if (outcome.kind === "dead") await this.fail(d, "dead", outcome.error, 0, "failed");
      else if (outcome.kind === "cancel") await this.fail(d, "cancel", outcome.error, 0, "");
      else {
        const attempt = d.env.attempts + d.token;
        const delay = outcome.afterMs ?? this.backoff(attempt);
        await this.fail(d, "retry", outcome.error, Math.round(delay), "");
      }
    } catch (e) {
      console.warn(`rill: could not record job ${d.env.jobId}: ${e}`); // the lease lapses; it runs again elsewhere
    } finally {
      if (this.held.get(d.address) === d) this.held.delete(d.address);
      this.freeSlot(d);
    }
  }

  private backoff(attempt: number): number {
    const base = Math.min(this.o.maxBackoffMs, this.o.backoffMs * 2 ** Math.max(0, attempt - 1));
    return base * (0.5 + Math.random() / 2);
  }

  /** Completes `d`: queued, and every completion queued in the same turn of the event loop goes in one
   * `ack.lua` call per stream (at most 64 per call). */
  private ack(d: Delivery, result: unknown): Promise<void> {
    let data = result === undefined || result === null ? Buffer.alloc(0) : encode(result, this.client.maxPayload);
    if (data.length === 1 && data[0] === 0xf6) data = Buffer.alloc(0); // CBOR null is no result
    return new Promise<void>((resolve, reject) => {
      this.acks.push({ d, data, resolve, reject });
      if (!this.ackScheduled) {
        this.ackScheduled = true;
        setImmediate(() => void this.flushAcks());
      }
    });
  }

  private async flushAcks(): Promise<void> {
    this.ackScheduled = false;
    const all = this.acks.splice(0, this.acks.length);
    const byStream = new Map<string, typeof all>();
    for (const a of all) byStream.set(a.d.stream, [...(byStream.get(a.d.stream) ?? []), a]);
    const k = this.keys;
    for (const [stream, items] of byStream) {
      for (let i = 0; i < items.length; i += 64) {
        const batch = items.slice(i, i + 64);
        const keys = [stream, k.index, k.events, k.held];
        const args: (string | number | Buffer)[] = [GROUP, this.consumer, Date.now(), this.o.retentionMs,
          this.o.eventsMaxlen, "0", batch.length, 1000, "1"];
        for (const { d } of batch) args.push(d.env.entryId, d.token);
        batch.forEach(({ d, data }, j) => {
          if (data.length || d.env.jobId !== d.env.entryId || d.touched) {
            keys.push(k.job(d.env.jobId), k.checkpoints(d.env.jobId));
            args.push(j + 1, d.env.jobId, d.env.attempts + d.token, data, d.touched ? "1" : "0");
          }
        });
        try {
          const got = await script("ack.lua").run(this.redis, keys, args);
          this.completed += Array.isArray(got) ? got.filter((c) => Number(c) === 1).length : Number(got);
          batch.forEach((a) => a.resolve());
        } catch (e) {
          batch.forEach((a) => a.reject(e));
        }
      }
    }
  }

  private async fail(d: Delivery, mode: string, error: string, delayMs: number, reason: string): Promise<void> {
    const k = this.keys;
    const [code] = (await script("fail.lua").run(this.redis,
      [d.stream, k.delayed, k.scheduled, k.index, k.dead, k.dead_index, k.events, k.job(d.env.jobId)],
      [GROUP, this.consumer, d.env.entryId, d.token, d.env.jobId, Date.now(), mode, delayMs, error.slice(0, 4096),
        reason, this.o.maxAttempts, this.o.eventsMaxlen, this.o.retentionMs])) as number[];
    if (code === 3) this.dead++;
    else if (code === 1 || code === 2) this.failed++;
  }

  private async deadLetterRefused(stream: string, eid: string, fields: [Buffer, Buffer][], token: number,
    refused: Refused): Promise<void> {
    const jid = jobIdOf(eid, fields, this.suffix(stream));
    const k = this.keys;
    await script("fail.lua").run(this.redis,
      [stream, k.delayed, k.scheduled, k.index, k.dead, k.dead_index, k.events, k.job(jid)],
      [GROUP, this.consumer, eid, token, jid, Date.now(), "dead", 0, refused.message.slice(0, 4096), refused.reason,
        this.o.maxAttempts, this.o.eventsMaxlen, this.o.retentionMs]);
    this.dead++;
  }

  private async update(d: Delivery, name: string, value: unknown): Promise<boolean> {
    d.touched = true;
    const got = await script("update.lua").run(this.redis, [d.stream, this.keys.job(d.env.jobId)],
      [GROUP, this.consumer, d.env.entryId, d.token, name, encode(value), this.o.retentionMs]);
    return got === 1;
  }

  private async checkpoint(d: Delivery, state: unknown, label: string): Promise<number | undefined> {
    const [code, version] = (await script("checkpoint.lua").run(this.redis,
      [d.stream, this.keys.checkpoints(d.env.jobId)],
      [GROUP, this.consumer, d.env.entryId, d.token, 0, Date.now(), label, encode(state, CHECKPOINT_MAX),
        CHECKPOINT_KEEP, CHECKPOINT_TTL_MS, CHECKPOINT_MAX])) as number[];
    if (code === 1) {
      d.touched = true;
      return Number(version);
    }
    if (code === 0) return undefined;
    throw new RillError(`checkpoint.lua answered ${code} (${version})`);
  }

  private async lastCheckpoint(d: Delivery): Promise<Checkpoint | undefined> {
    const got = await this.redis.xrevrangeBuffer(this.keys.checkpoints(d.env.jobId), "+", "-", "COUNT", 1);
    if (!got.length) return undefined;
    const f = Object.fromEntries(pairs(got[0][1]).map(([k, v]) => [k.toString(), v]));
    return { version: Number(text(f.version)), state: decode(f.state), label: text(f.label), ms: Number(text(f.ms)) };
  }

  // Signals (SPEC.md section 6b)

  private async listen(conn: Redis): Promise<void> {
    while (!this.stopping) {
      let got: [string, [string, string[]][]][] | null;
      try {
        got = (await conn.xread("BLOCK", this.o.blockMs, "STREAMS", this.keys.signals, this.signalsAfter)) as typeof got;
      } catch (e) {
        if (this.stopping) return;
        console.warn(`rill: reading signals failed (${e}); retrying`);
        await sleep(500);
        continue;
      }
      for (const [, entries] of got ?? []) {
        for (const [sid, flat] of entries) {
          this.signalsAfter = sid;
          const f: Record<string, string> = {};
          for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i]] = flat[i + 1];
          await this.apply(f, sid).catch((e) => console.warn(`rill: signal ${sid} not applied: ${e}`));
        }
      }
    }
  }

  private async apply(f: Record<string, string>, sid: string): Promise<void> {
    const kind = f.kind ?? "";
    const target = f.target ?? "";
    const mine = target === "queue" || target === `worker:${this.consumer}`;
    if (target.startsWith("job:")) {
      const d = [...this.held.values()].find((d) => d.env.jobId === target.slice(4));
      if (!d) return; // another worker's job, or none: not ours to answer
      if (kind === "cancel") {
        d.cancelRequested = true;
        d.abort.abort(new Error("cancelled"));
        await this.outcome(sid, "applied", "cancelling the running job");
      } else {
        await this.outcome(sid, "ignored", `${kind} of a running job is not supported by this client`);
      }
    } else if (!mine) {
      return;
    } else if (kind === "pause" && target === "queue") {
      this.paused = true;
      await this.outcome(sid, "applied", "taking no new jobs");
    } else if (kind === "resume" && target === "queue") {
      this.paused = false;
      this.wake();
      await this.outcome(sid, "applied", "taking jobs again");
    } else if (kind === "quiet") {
      this.quiet = true;
      await this.outcome(sid, "applied", "taking no new jobs");
    } else if (kind === "stop") {
      await this.outcome(sid, "applied", "stopping");
      this.stopping = true;
      this.wake();
      this.conns[0]?.disconnect(); // unblock the read
    } else {
      await this.outcome(sid, "ignored", `${kind} is not handled by this worker`);
    }
  }

  private async outcome(sid: string, outcome: string, reason: string): Promise<void> {
    await this.redis.xadd(this.keys.outcomes, "MAXLEN", "~", 10_000, "*", "signal", sid, "receiver", this.consumer,
      "outcome", outcome, "reason", reason, "ms", Date.now());
  }

  // Leases, stalled jobs, due jobs, the registry

  private async maintain(): Promise<void> {
    const renewEvery = this.leaseMs / 3;
    let nextRenew = 0, nextBeat = 0, nextReclaim = 0, nextPromote = 0;
    const cursors = new Map<string, string>();
    while (!this.stopping || this.held.size > 0) {
      const now = Date.now();
      try {
        if (now >= nextRenew) {
          await this.renew();
          nextRenew = now + renewEvery;
        }
        if (now >= nextBeat) {
          await this.beat();
          nextBeat = now + 1000;
        }
        if (!this.stopping) {
          if (now >= nextReclaim) {
            if (now < this.releaseUntil) await this.releaseOrphans();
            await this.adopt();
            await this.reclaim(cursors);
            nextReclaim = now + this.o.reclaimEveryMs;
          }
          if (now >= nextPromote) {
            await this.promote();
            nextPromote = now + 1000;
          }
        }
      } catch (e) {
        if (!this.stopping) console.warn(`rill: maintenance failed: ${e}`);
      }
      await sleep(Math.min(50, renewEvery));
    }
  }

  private async renew(): Promise<void> {
    const byStream = new Map<string, Delivery[]>();
    for (const d of this.held.values()) byStream.set(d.stream, [...(byStream.get(d.stream) ?? []), d]);
    const sent = Date.now();
    for (const [stream, ds] of byStream) {
      const args: (string | number)[] = [GROUP, this.consumer];
      for (const d of ds) args.push(d.env.entryId, d.token);
      const codes = (await script("extend.lua").run(this.redis, [stream], args)) as number[];
      ds.forEach((d, i) => (codes[i] === 1 ? (d.renewed = sent) : this.lose(d)));
    }
  }

  /** Lets go before anyone may take over (SPEC.md section 9a): no renewal landed for 2/3 of the lease, or no
   * heartbeat for 2/3 of crash_after (others may then adopt every job of this worker). */
  private giveUpOverdue(): void {
    const now = Date.now();
    const silent = now - this.beatLanded > (CRASH_AFTER_MS * 2) / 3;
    for (const d of [...this.held.values()]) if (silent || now - d.renewed > (this.leaseMs * 2) / 3) this.lose(d);
  }

  private async releaseOrphans(): Promise<void> {
    const mine = new Set([...this.held.values()].map((d) => `${d.stream} ${d.env.entryId}`));
    for (const stream of this.streams()) {
      const pending = (await this.redis.xpending(stream, GROUP, "-", "+", 1000, this.consumer)) as [string, string, number, number][];
      await this.release(stream, pending.filter((p) => !mine.has(`${stream} ${p[0]}`)).map((p) => [p[0], Number(p[3])]));
    }
  }

  private lose(d: Delivery): void {
    this.leaseFailures++;
    d.lost = true;
    d.abort.abort(new Error("lease lost"));
    if (this.held.get(d.address) === d) this.held.delete(d.address);
  }

  private async beat(): Promise<void> {
    const running = [...this.held.values()].map((d) => [d.startedMs, d.env.jobId] as const).sort((a, b) => a[0] - b[0]);
    let status = this.stopping ? "draining" : running.length ? "busy" : "idle";
    if (this.paused && !this.stopping) status = "paused";
    const failures = this.leaseFailures;
    const perBeat: (string | number)[] = ["status", status, "reason", "", "in_flight", running.length,
      "processed", this.completed, "failed", this.failed + this.dead, "lease_failures", failures - this.beatenFailures];
    const fields = [...perBeat, "running", running.slice(0, 100).map(([ms, id]) => `${ms}:${id}`).join(" ")];
    if (!this.registered) {
      fields.push("host", hostname(), "pid", process.pid, "queue", this.keys.queue, "concurrency",
        this.o.concurrency, "version", "typescript-0.1.0", "started_ms", this.startedMs, "capabilities", "");
    }
    const k = this.keys;
    const sent = Date.now();
    const [, created, crashed] = (await script("heartbeat.lua").run(this.redis,
      [k.workers, k.worker(this.consumer), k.heartbeats],
      [this.consumer, 0, HEARTBEATS_MAXLEN, RECORD_TTL_MS, CRASH_AFTER_MS, perBeat.length / 2, ...fields])) as [
      unknown, number, Buffer[]];
    this.beatenFailures = failures;
    this.beatLanded = sent;
    if (!this.registered) this.registered = true;
    else if (Number(created) > 0) this.registered = false; // no record was there: register again next beat
    this.crashed = crashed.map(text);
  }

  private async adopt(): Promise<void> {
    const k = this.keys;
    while (this.crashed.length && this.free() > 0) {
      const crashed = this.crashed.shift()!;
      const streams = this.streams();
      for (const stream of streams) {
        const [, taken] = (await script("adopt.lua").run(this.redis,
          [stream, k.index, k.dead, k.dead_index, k.events, k.workers, k.worker(crashed),
            ...streams.filter((s) => s !== stream)],
          [GROUP, this.consumer, crashed, 0, CRASH_AFTER_MS, Math.max(1, this.free()), this.o.maxAttempts,
            this.o.eventsMaxlen])) as [number, [Buffer, number, Buffer[]][]];
        for (const [eid, token, flat] of taken) this.dispatch(stream, text(eid), flat, Number(token));
      }
    }
  }

  private async reclaim(cursors: Map<string, string>): Promise<void> {
    const k = this.keys;
    for (const stream of this.streams()) {
      const free = this.free();
      if (free === 0) return;
      const [next, taken] = (await script("reclaim.lua").run(this.redis,
        [stream, k.index, k.dead, k.dead_index, k.events],
        [GROUP, this.consumer, this.leaseMs, cursors.get(stream) ?? "0-0", free, Date.now(), this.o.maxAttempts,
          this.o.eventsMaxlen])) as [Buffer, [Buffer, number, Buffer[]][]];
      cursors.set(stream, text(next));
      for (const [eid, token, flat] of taken) this.dispatch(stream, text(eid), flat, Number(token));
    }
  }

  private async promote(): Promise<void> {
    const k = this.keys;
    const out = (await script("promote.lua").run(this.redis,
      [k.delayed, k.scheduled, k.ready, k.index, k.events, k.schedules, k.limit, ...k.levelTail()],
      [0, 1000, this.o.eventsMaxlen])) as unknown[];
    if (this.setLevels(text(out[5]), text(out[6]))) await this.createGroups();
    this.limited = Number(out[3]) !== 0;
  }

  // Shutdown

  private async shutdown(): Promise<void> {
    const deadline = Date.now() + Math.max(30_000, this.leaseMs);
    while (this.held.size > 0 && Date.now() < deadline) await sleep(20);
    await Promise.allSettled([...this.running]);
    for (const c of this.conns) c.disconnect();
    await Promise.allSettled(this.loops);
    try {
      for (const stream of this.streams()) {
        const pending = (await this.redis.xpending(stream, GROUP, "-", "+", 10_000, this.consumer)) as [string, string, number, number][];
        await this.release(stream, pending.map((p) => [p[0], Number(p[3])]));
        await script("retire.lua").run(this.redis, [stream], [GROUP, this.consumer]);
      }
      // A graceful exit leaves the registry (SPEC.md section 6c).
      await this.redis.del(this.keys.worker(this.consumer));
      await this.redis.zrem(this.keys.workers, this.consumer);
    } catch (e) {
      console.warn(`rill: could not retire ${this.consumer}: ${e}`);
    }
  }

  private async release(stream: string, deliveries: [string, number][]): Promise<void> {
    if (!deliveries.length) return;
    const args: (string | number)[] = [GROUP, this.consumer, Date.now(), this.o.eventsMaxlen];
    for (const [eid, token] of deliveries) args.push(eid, token);
    await script("release.lua").run(this.redis, [stream, this.keys.index, this.keys.events], args);
  }
}

function pairs(flat: Buffer[]): [Buffer, Buffer][] {
  const out: [Buffer, Buffer][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}
