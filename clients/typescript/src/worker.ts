/** `Worker`: runs a queue's jobs by SPEC.md section 9. Claims with XREADGROUP (level by level, or through
 * `limit.lua` under limits), checks each entry, renews leases on a timer the handlers cannot starve, finishes
 * through the fenced scripts (a delivery someone else took over writes nothing), takes back stalled jobs and adopts
 * crashed workers' ones, promotes due jobs, beats into the registry, follows signals, and hands back what is left
 * at shutdown. */

import type { Redis } from "ioredis";
import { Interrupted, Partitioned, Permanent, Retry, RillError } from "./errors.js";
import { type Envelope, type Job, Refused, decodePayload, parseEntry } from "./job.js";
import { GROUP } from "./keys.js";
import { script, text } from "./scripts.js";
import { type Delivery, type Outcome, type Raw, pairs, sleep } from "./worker/base.js";
import { Listening } from "./worker/listener.js";

export type { Handler, WorkerOptions } from "./worker/base.js";

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
export class Worker<T = unknown> extends Listening<T> {
  /** Works jobs until `close()` (or a `stop` signal); resolves once running jobs are done and the rest handed
   * back. */
  run(): Promise<void> {
    this.done ??= this.work();
    return this.done;
  }

  protected async work(): Promise<void> {
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

  protected async start(): Promise<void> {
    // This package's worker reads one key set: on a partitioned queue it would leave the other partitions' jobs
    // waiting, so it refuses to start rather than work part of the queue.
    if (await this.client.partitions(this.keys))
      throw new Partitioned(this.keys.queue, "this package's worker runs one partition; run a Rust worker (`rill work QUEUE -- CMD` runs any program) for partitioned queues");
    const [levels, weights] = await this.redis.hmget(this.keys.priorities, "levels", "weights");
    this.setLevels(levels ?? "", weights ?? "");
    await this.createGroups();
    await this.redis.hsetnx(this.keys.config, "lease_ms", this.o.leaseMs);
    const [stored, defaultTimeout] = await this.redis.hmget(this.keys.config, "lease_ms", "timeout_ms");
    if (stored) this.leaseMs = Number(stored);
    // The queue's default limit for jobs without their own, unless this worker was given one.
    if (this.o.timeoutMs === undefined && Number(defaultTimeout) > 0) this.o.timeoutMs = Number(defaultTimeout);
    const limits = await this.redis.hmget(this.keys.limit, "rate", "concurrency", "key_field");
    this.limited = limits.some((x) => x !== null) || (await this.redis.zcard(this.keys.held)) > 0;
    this.paused = (await this.redis.exists(this.keys.paused)) === 1;
    const newest = await this.redis.xrevrange(this.keys.signals, "+", "-", "COUNT", 1);
    this.signalsAfter = newest[0]?.[0] ?? "0-0";
  }

  protected order(): string[] {
    const streams = this.streams();
    if (!this.weights) return streams;
    const total = this.weights.reduce((a, b) => a + b, 0);
    this.weights.forEach((w, i) => (this.credits[i] += w));
    let first = 0;
    for (let i = 1; i < streams.length; i++) if (this.credits[i] > this.credits[first]) first = i;
    this.credits[first] -= total;
    return [streams[first], ...streams.filter((_, i) => i !== first)];
  }

  protected async read(conn: Redis, free: number): Promise<[string, Buffer[][]][]> {
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
  protected async readLimited(conn: Redis, free: number): Promise<[string, Buffer[][]][]> {
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

  protected dispatch(stream: string, eid: string, flat: Raw, token: number): void {
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
      abort: new AbortController(), stopping: new AbortController(), parkRequested: false, renewed: Date.now(), startedMs: Date.now(), lost: false, settling: false,
      cancelRequested: false, touched: false, slotFreed: false,
    };
    this.held.set(d.address, d);
    this.active++;
    this.track(this.runOne(d, payload as T));
  }

  protected job(d: Delivery, payload: T): Job<T> {
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
      stopping: d.stopping.signal,
      header: (name) => d.env.headers[name]?.toString("utf8"),
      schedule: scheduleOf(d.env.headers),
      progress: (value) => worker.update(d, "progress", value),
      checkpoint: (state, label = "") => worker.checkpoint(d, state, label),
      resume: () => worker.lastCheckpoint(d),
    };
  }

  protected async runOne(d: Delivery, payload: T): Promise<void> {
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
      if (e instanceof Interrupted) outcome = d.parkRequested ? { kind: "park" } : { kind: "hand back" };
      else if (e instanceof Permanent) outcome = { kind: "dead", error: e.message };
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
}

function scheduleOf(h: Record<string, Buffer>): { name: string; fireMs: number } | undefined {
  const name = h["x-schedule"]?.toString("utf8"), at = Number(h["x-fire-ms"]?.toString("utf8"));
  return name !== undefined && Number.isSafeInteger(at) ? { name, fireMs: at } : undefined;
}
