/** `Queue`: producing jobs and looking at them (SPEC.md sections 4, 6 and 8). */

import { randomBytes } from "node:crypto";
import type { Client } from "./client.js";
import { InvalidOption, NoSuchPriority, ProtocolError } from "./errors.js";
import { GROUP, LEVELS, QueueKeys, validateJobId } from "./keys.js";
import { script, text } from "./scripts.js";
import {
  addSchedule, type Schedule, type ScheduleInfo, scheduleInfo, setScheduleState, NEVER,
} from "./schedule.js";
import { ENDED, RECHECK_MS, follower } from "./wait.js";
import { decode, encode } from "./wire.js";

/** Milliseconds a chosen id or dedup key refuses a second job after the first enqueue (every rill producer: 24 h). */
export const DEFAULT_DEDUP_TTL_MS = 24 * 3600 * 1000;
export const RECORD_RETENTION_MS = 24 * 3600 * 1000;
const MAX_ATTEMPTS = 1_000_000;
const MAX_TIMEOUT_MS = 31_622_400_000;
const STATE_SCAN = 200;

export interface EnqueueOptions {
  /** A job id of your own: a second enqueue of it adds nothing while the job is live or within `dedupTtlMs`. */
  id?: string;
  /** Deduplication key (like `id`, but the job id is generated). */
  dedupKey?: string;
  dedupTtlMs?: number;
  /** Run no earlier than this many ms from now. */
  delayMs?: number;
  /** The same as `delayMs`, under BullMQ's name (ms). */
  delay?: number;
  /** Run no earlier than this time. */
  runAt?: Date;
  maxAttempts?: number;
  /** Longest one attempt may run, ms. */
  timeoutMs?: number;
  /** A priority level of the queue's (0, the default, is taken first). */
  priority?: number;
  /** Headers carried with the job: names start with `x-` (`{ "x-tenant": "acme" }`). */
  headers?: Record<string, string | Buffer>;
}

export interface EnqueueOutcome {
  id: string;
  /** Nothing was added: a job with that id or dedup key is live or was enqueued within the TTL (`id` is its). */
  duplicate: boolean;
}

export type JobState =
  | "waiting" | "active" | "delayed" | "failed" | "parked" | "completed" | "cancelled" | "dead" | "unknown";

export interface JobInfo {
  id: string;
  state: JobState;
  entryId: string;
  attempts: number;
  owner: string;
  deliveries: number;
  finishedMs: number;
  level: number;
  /** The result's CBOR bytes, once completed with one. */
  result?: Buffer;
  /** A dead job's last error. */
  error?: string;
}

export interface Counts {
  waiting: number;
  active: number;
  delayed: number;
  dead: number;
  parked: number;
}

export class Queue {
  /** The partition the next job without an id goes to (on a partitioned queue). */
  private turn = randomBytes(2).readUInt16BE(0);

  constructor(readonly client: Client, readonly keys: QueueKeys) {}

  get name(): string {
    return this.keys.queue;
  }

  private get redis() {
    return this.client.redis;
  }

  /** Adds a job with `payload` (any CBOR-encodable value) and returns its id. */
  async enqueue(payload: unknown, options: EnqueueOptions = {}): Promise<string> {
    return (await this.enqueueOutcome(payload, options)).id;
  }

  /** As `enqueue`, saying whether the job was added or was a duplicate. */
  async enqueueOutcome(payload: unknown, o: EnqueueOptions = {}): Promise<EnqueueOutcome> {
    if (o.id !== undefined) validateJobId(o.id);
    if (o.dedupKey !== undefined) validateJobId(o.dedupKey);
    if (o.maxAttempts !== undefined && !(Number.isInteger(o.maxAttempts) && o.maxAttempts >= 1 && o.maxAttempts <= MAX_ATTEMPTS))
      throw new InvalidOption("maxAttempts", "from 1 to 1,000,000");
    if (o.timeoutMs !== undefined && !(Number.isInteger(o.timeoutMs) && o.timeoutMs >= 1 && o.timeoutMs <= MAX_TIMEOUT_MS))
      throw new InvalidOption("timeoutMs", "from 1 ms to 366 days, whole ms");
    const priority = o.priority ?? 0;
    if (!Number.isInteger(priority) || priority < 0 || priority >= LEVELS)
      throw new InvalidOption("priority", "a level from 0 to 15");
    const delayMs = o.delayMs ?? o.delay;
    if (delayMs !== undefined && !(delayMs >= 0)) throw new InvalidOption("delayMs", "not negative");
    const headers = headerFields(o.headers);
    const data = encode(payload, this.client.maxPayload);
    const now = Date.now();
    let due = 0;
    if (delayMs !== undefined) due = now + Math.round(delayMs);
    if (o.runAt !== undefined) due = Math.max(due, o.runAt.getTime());
    await this.client.listQueue(this.keys);
    // A partitioned queue (SPEC.md section 2a): the job goes to the partition of its dedup key, else of its id; one
    // without an id gets a generated one, routed to the next partition in turn.
    let k = this.keys;
    let generated: string | undefined;
    const parts = await this.client.partitions(this.keys);
    if (parts) {
      const routing = o.dedupKey ?? o.id;
      const index = routing !== undefined ? parts.ofKey(routing) : ++this.turn % parts.length;
      if (o.id === undefined) generated = parts.idIn(index, now);
      k = this.keys.partition(parts.tags[index]);
    }
    if (o.id === undefined && generated === undefined && o.dedupKey === undefined && due <= now && priority === 0) {
      // SPEC.md section 8: a plain job is one XADD; its entry id is its job id.
      const fields: (string | Buffer)[] = ["v", "1", "payload", data];
      if (o.maxAttempts !== undefined) fields.push("max_attempts", String(o.maxAttempts));
      if (o.timeoutMs !== undefined) fields.push("timeout_ms", String(o.timeoutMs));
      fields.push(...headers);
      const id = await this.redis.xadd(k.ready, "*", ...fields);
      return { id: text(id), duplicate: false };
    }
    let jobId: string;
    if (o.id !== undefined) jobId = o.id;
    else if (generated !== undefined) jobId = generated;
    else if (o.dedupKey === undefined && due <= now) jobId = ""; // unnamed above level 0: `<entry id>@<level>`
    else jobId = randomBytes(16).toString("hex");
    const ttl = jobId !== "" && (o.id !== undefined || o.dedupKey !== undefined)
      ? Math.max(1, Math.round(o.dedupTtlMs ?? DEFAULT_DEDUP_TTL_MS)) : 0;
    const fields: (string | Buffer)[] = ["v", "1", "payload", data, "enqueued_ms", String(now)];
    if (o.maxAttempts !== undefined) fields.push("max_attempts", String(o.maxAttempts));
    if (o.timeoutMs !== undefined) fields.push("timeout_ms", String(o.timeoutMs));
    if (priority > 0) fields.push("priority", String(priority));
    fields.push(...headers);
    const keys = [k.level(priority), k.delayed, k.scheduled, k.index, k.dedup(o.dedupKey ?? jobId)];
    if (priority > 0) keys.push(k.priorities);
    const reply = (await script("enqueue.lua").run(this.redis, keys, [jobId, ttl, due > now ? due : 0, now, ...fields])) as unknown[];
    const code = Number(reply[0]);
    if (code === 1 || code === 2) return { id: text(reply[1]), duplicate: false };
    if (code === 0) return { id: text(reply[1]), duplicate: true };
    if (code === -1) throw new NoSuchPriority(priority, Number(reply[1]));
    throw new ProtocolError("enqueue.lua", `unknown code ${code}`);
  }

  /** Adds plain jobs, pipelined `chunk` at a time; their ids in order. */
  async enqueueMany(payloads: unknown[], chunk = 1000): Promise<string[]> {
    const data = payloads.map((p) => encode(p, this.client.maxPayload));
    if (await this.client.partitions(this.keys)) {
      // Each job through its partition's enqueue.lua (it needs an id there).
      const ids: string[] = [];
      for (const p of payloads) ids.push(await this.enqueue(p));
      return ids;
    }
    await this.client.listQueue(this.keys);
    const ids: string[] = [];
    for (let i = 0; i < data.length; i += chunk) {
      const pipe = this.redis.pipeline();
      for (const d of data.slice(i, i + chunk)) pipe.xadd(this.keys.ready, "*", "v", "1", "payload", d);
      for (const [err, id] of (await pipe.exec()) ?? []) {
        if (err) throw err;
        ids.push(text(id));
      }
    }
    return ids;
  }

  // Schedules (SPEC.md section 6e): each change atomic; any worker of the queue fires them.

  /** Adds schedule `name`, or replaces its definition and data (its counters stay; a paused one stays paused). Each
   * fire enqueues `data` as a plain job with headers `x-schedule` and `x-fire-ms` (`job.schedule`). */
  async schedule(name: string, schedule: Schedule, data: unknown = null): Promise<ScheduleInfo> {
    await addSchedule(this.redis, this.keys, name, schedule, data, this.client.maxPayload);
    await this.client.listQueue(this.keys);
    const info = await scheduleInfo(this.redis, this.keys, name);
    if (!info) throw new ProtocolError("HGETALL", `schedule ${name} vanished as it was written`);
    return info;
  }

  /** Every schedule of this queue, by name. */
  async schedules(): Promise<ScheduleInfo[]> {
    const names = (await this.redis.zrange(this.keys.schedules, 0, -1)).sort();
    const out: ScheduleInfo[] = [];
    for (const n of names) {
      const info = await scheduleInfo(this.redis, this.keys, n);
      if (info) out.push(info);
    }
    return out;
  }

  /** Schedule `name` as stored, or undefined. */
  async scheduleInfo(name: string): Promise<ScheduleInfo | undefined> {
    return scheduleInfo(this.redis, this.keys, name);
  }

  /** Pauses schedule `name` (it fires nothing until resumed); false if there is none. */
  async pauseSchedule(name: string): Promise<boolean> {
    return setScheduleState(this.redis, this.keys, name, { paused: 1 }, "+inf");
  }

  /** Resumes schedule `name` from its next fire time after now; false if there is none. */
  async resumeSchedule(name: string): Promise<boolean> {
    const info = await scheduleInfo(this.redis, this.keys, name);
    if (!info) return false;
    const next = info.schedule.nextAfter(Date.now()) ?? NEVER.toString();
    return setScheduleState(this.redis, this.keys, name, { paused: 0, next_ms: next.toString() }, next.toString());
  }

  /** Removes schedule `name` (jobs it enqueued stay); false if there was none. */
  async removeSchedule(name: string): Promise<boolean> {
    const r = await this.redis.multi().zrem(this.keys.schedules, name).del(this.keys.schedule(name)).exec();
    return Number(r?.[0]?.[1] ?? 0) > 0;
  }

  // Limits (SPEC.md sections 6f, 6h) and priority levels (6g): every worker of the queue follows them within a second.

  /** The queue's default limit on one attempt (ms) of a job without its own; undefined removes it. Workers read it
   * when they start; one given its own `timeoutMs` keeps that. */
  async setDefaultTimeout(ms?: number): Promise<void> {
    if (ms !== undefined && ms > 0) await this.redis.hset(this.keys.config, "timeout_ms", Math.round(ms));
    else await this.redis.hdel(this.keys.config, "timeout_ms");
  }

  /** At most `max` job starts in any window of `perMs`, across all workers. */
  async setRateLimit(max: number, perMs: number): Promise<void> {
    if (!Number.isInteger(max) || max < 1 || !(perMs >= 1)) throw new InvalidOption("rate limit", "at least 1 job per at least 1 ms");
    await this.redis.hset(this.keys.limit, "rate", max, "period_ms", Math.round(perMs));
  }

  async clearRateLimit(): Promise<void> {
    await this.redis.hdel(this.keys.limit, "rate", "period_ms", "used");
    await this.redis.del(this.keys.limit_starts);
  }

  /** At most `max` jobs handed out and not finished at once, across all workers. */
  async setConcurrencyLimit(max: number): Promise<void> {
    if (!Number.isInteger(max) || max < 1) throw new InvalidOption("concurrency limit", "at least 1");
    await this.redis.hset(this.keys.limit, "concurrency", max);
  }

  async clearConcurrencyLimit(): Promise<void> {
    await this.redis.hdel(this.keys.limit, "concurrency");
  }

  /** Limits each key, the value of header `field` (`x-tenant`): a rate (`rate` per `perMs`) and/or a concurrency
   * per key; keys with a backlog take turns. */
  async setKeyLimit(field: string, limit: { rate?: number; perMs?: number; concurrency?: number }): Promise<void> {
    if (!field.startsWith("x-") || field.length < 3) throw new InvalidOption("key limit", "the field is a header name starting with x-");
    if (limit.rate === undefined && limit.concurrency === undefined)
      throw new InvalidOption("key limit", "needs a rate, a concurrency or both");
    const set: (string | number)[] = ["key_field", field];
    const drop: string[] = [];
    if (limit.rate !== undefined) {
      if (!Number.isInteger(limit.rate) || limit.rate < 1 || !((limit.perMs ?? 0) >= 1))
        throw new InvalidOption("key limit", "a rate needs at least 1 job per at least 1 ms");
      set.push("key_rate", limit.rate, "key_period_ms", Math.round(limit.perMs!));
    } else drop.push("key_rate", "key_period_ms");
    if (limit.concurrency !== undefined) {
      if (!Number.isInteger(limit.concurrency) || limit.concurrency < 1)
        throw new InvalidOption("key limit", "a concurrency needs at least 1 job");
      set.push("key_concurrency", limit.concurrency);
    } else drop.push("key_concurrency");
    const multi = this.redis.multi().hset(this.keys.limit, ...set);
    if (drop.length) multi.hdel(this.keys.limit, ...drop);
    await multi.exec();
  }

  /** Removes the per-key limits; jobs they hold back are then handed out in turn. */
  async clearKeyLimit(): Promise<void> {
    await this.redis.hdel(this.keys.limit, "key_field", "key_rate", "key_period_ms", "key_concurrency");
  }

  /** Gives the queue `levels` priority levels (1 to 16; 0 is taken first), read strictly in order, or with
   * `weights` (one per level) each read starts at a level picked in proportion to its weight. */
  async setPriorities(levels: number, weights?: number[]): Promise<void> {
    if (weights) {
      levels = weights.length;
      if (levels < 2 || weights.some((w) => !Number.isInteger(w) || w < 1))
        throw new InvalidOption("weights", "2 to 16 positive integers, one per level");
    }
    if (!Number.isInteger(levels) || levels < 1 || levels > LEVELS) throw new InvalidOption("levels", "1 to 16");
    const k = this.keys;
    const [code, level] = (await script("levels.lua").run(this.redis,
      [k.priorities, ...Array.from({ length: LEVELS - 1 }, (_, p) => k.level(p + 1))],
      [GROUP, levels, weights ? weights.join(",") : ""])) as number[];
    if (Number(code) !== 1) throw new InvalidOption("levels", `level ${level} still holds a job`);
  }

  /** The keys of each partition (SPEC.md section 2a), partition 0 first; just this queue's when not partitioned. */
  private async partitionKeys(): Promise<QueueKeys[]> {
    const parts = await this.client.partitions(this.keys);
    return parts ? parts.tags.map((t) => this.keys.partition(t)) : [this.keys];
  }

  /** The partitions' keys in the order to look for job `id`: the one its id routes to first. */
  private async search(id: string): Promise<QueueKeys[]> {
    const parts = await this.client.partitions(this.keys);
    if (!parts) return [this.keys];
    const first = parts.ofKey(id);
    return [...parts.tags.slice(first), ...parts.tags.slice(0, first)].map((t) => this.keys.partition(t));
  }

  /** Where job `id` is now, with its result once completed. */
  async job(id: string): Promise<JobInfo> {
    let first: JobInfo | undefined;
    for (const k of await this.search(id)) {
      const info = await this.jobIn(k, id);
      if (info.state !== "unknown") return info;
      first ??= info;
    }
    return first as JobInfo;
  }

  private async jobIn(k: QueueKeys, id: string): Promise<JobInfo> {
    const row = (await script("state.lua").run(
      this.redis,
      [k.index, k.delayed, k.scheduled, k.ready, k.job(id), k.dead_index, k.parked, k.events, k.dead, ...k.levelTail()],
      [GROUP, id, STATE_SCAN],
    )) as unknown[];
    if (!Array.isArray(row) || row.length < 6) throw new ProtocolError("state.lua", `reply ${String(row)}`);
    const info: JobInfo = {
      id,
      state: text(row[0]) as JobState,
      entryId: text(row[1]),
      attempts: Number(row[2]),
      owner: text(row[3]),
      deliveries: Number(row[4]),
      finishedMs: Number(row[5]),
      level: row.length > 6 ? Number(row[6]) : 0,
    };
    if (info.state === "completed") {
      const r = await this.redis.hgetBuffer(k.job(id), "result");
      if (r) info.result = r;
    }
    if (info.state === "dead" && info.entryId) {
      const got = await this.redis.xrange(k.dead, info.entryId, info.entryId);
      const f = got[0]?.[1] ?? [];
      const i = f.indexOf("dead_error");
      if (i >= 0) info.error = f[i + 1];
    }
    return info;
  }

  /** Waits until job `id` ends (completed, dead, cancelled, or unknown) or `timeoutMs` passes, and returns its
   * info then (`state` says which; `result(id)` decodes a result). One blocking read per queue and client serves
   * every waiter (SPEC.md section 7). */
  async wait(id: string, timeoutMs = 60_000): Promise<JobInfo> {
    // The events of the partition that holds the job (the one its id routes to while none does).
    const order = await this.search(id);
    let holder = order[0];
    for (const k of order) {
      if ((await this.jobIn(k, id)).state !== "unknown") {
        holder = k;
        break;
      }
    }
    const f = follower(this.client, holder.events);
    await f.start();
    let wake: () => void = () => {};
    let woken = false;
    const forget = f.expect(id, () => {
      woken = true;
      wake();
    });
    try {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const info = await this.job(id);
        const left = deadline - Date.now();
        if (ENDED.has(info.state) || left <= 0) return info;
        if (!woken) {
          await new Promise<void>((res) => {
            wake = res;
            setTimeout(res, Math.min(RECHECK_MS, left));
          });
        }
        woken = false;
      }
    } finally {
      forget();
    }
  }

  /** The job's state: waiting, active, delayed, failed, parked, completed, cancelled, dead or unknown. */
  async state(id: string): Promise<JobState> {
    return (await this.job(id)).state;
  }

  /** The decoded result of a completed job (`undefined`: not completed, no result, or its record expired). */
  async result<R = unknown>(id: string): Promise<R | undefined> {
    const info = await this.job(id);
    return info.result ? (decode(info.result) as R) : undefined;
  }

  /** Waiting and active summed over priority levels (held jobs of per-key limits count as waiting). */
  async counts(): Promise<Counts> {
    const total: Counts = { waiting: 0, active: 0, delayed: 0, dead: 0, parked: 0 };
    for (const k of await this.partitionKeys()) {
      const c = await this.countsIn(k);
      for (const name of Object.keys(total) as (keyof Counts)[]) total[name] += c[name];
    }
    return total;
  }

  private async countsIn(k: QueueKeys): Promise<Counts> {
    const levels = Math.min(Math.max(Number((await this.redis.hget(k.priorities, "levels")) ?? 1), 1), LEVELS);
    const out: Counts = {
      waiting: await this.redis.zcard(k.held),
      active: 0,
      delayed: await this.redis.zcard(k.delayed),
      dead: await this.redis.xlen(k.dead),
      parked: await this.redis.zcard(k.parked),
    };
    for (let p = 0; p < levels; p++) {
      const stream = k.level(p);
      let groups: unknown[][];
      try {
        groups = (await this.redis.xinfo("GROUPS", stream)) as unknown[][];
      } catch {
        continue; // no stream yet
      }
      const g = groups.map(pairs).find((g) => g.name === GROUP);
      if (!g) {
        out.waiting += await this.redis.xlen(stream);
        continue;
      }
      out.active += Number(g.pending ?? 0);
      let lag = g.lag;
      if (lag === null || lag === undefined) {
        lag = (await this.redis.xrange(stream, `(${text(g["last-delivered-id"])}`, "+", "COUNT", 10000)).length;
      }
      out.waiting += Number(lag);
    }
    return out;
  }
}

function pairs(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[text(flat[i])] = flat[i + 1];
  return out;
}

function headerFields(headers?: Record<string, string | Buffer>): (string | Buffer)[] {
  const out: (string | Buffer)[] = [];
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (!name.startsWith("x-") || name.length < 3 || name.length > 128)
      throw new InvalidOption("header", `${JSON.stringify(name)}: a header name starts with x- and is at most 128 bytes`);
    out.push(name, value);
  }
  return out;
}
