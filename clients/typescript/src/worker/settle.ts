/** How a worker ends a delivery (SPEC.md section 9, steps 3 to 5): through the fenced scripts, completions batched
 * per turn of the event loop, so a delivery someone else took over writes nothing; and what a handler writes while
 * it runs (progress, checkpoints). */

import { RillError } from "../errors.js";
import { type Checkpoint, type Refused, jobIdOf } from "../job.js";
import { GROUP } from "../keys.js";
import { script, text } from "../scripts.js";
import { decode, encode } from "../wire.js";
import { CHECKPOINT_KEEP, CHECKPOINT_MAX, CHECKPOINT_TTL_MS, type Delivery, type Outcome, WorkerCore, pairs } from "./base.js";

export abstract class Settling<T> extends WorkerCore<T> {
  protected async settle(d: Delivery, outcome: Outcome): Promise<void> {
    if (this.held.get(d.address) !== d || d.settling || d.lost) return; // given up, or settled already
    d.settling = true;
    try {
      if (outcome.kind === "ok") await this.ack(d, outcome.result);
      else if (outcome.kind === "dead") await this.fail(d, "dead", outcome.error, 0, "failed");
      else if (outcome.kind === "cancel") await this.fail(d, "cancel", outcome.error, 0, "");
      else if (outcome.kind === "park") {
        const k = this.keys;
        await script("park.lua").run(this.redis, [d.stream, k.scheduled, k.parked, k.index, k.events],
          [GROUP, this.consumer, d.env.entryId, d.token, Date.now(), this.o.eventsMaxlen]);
      } else if (outcome.kind === "hand back") await this.release(d.stream, [[d.env.entryId, d.token]]);
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

  protected backoff(attempt: number): number {
    const base = Math.min(this.o.maxBackoffMs, this.o.backoffMs * 2 ** Math.max(0, attempt - 1));
    return base * (0.5 + Math.random() / 2);
  }

  /** Completes `d`: queued, and every completion queued in the same turn of the event loop goes in one
   * `ack.lua` call per stream (at most 64 per call). */
  protected ack(d: Delivery, result: unknown): Promise<void> {
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

  protected async flushAcks(): Promise<void> {
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

  protected async fail(d: Delivery, mode: string, error: string, delayMs: number, reason: string): Promise<void> {
    const k = this.keys;
    const [code] = (await script("fail.lua").run(this.redis,
      [d.stream, k.delayed, k.scheduled, k.index, k.dead, k.dead_index, k.events, k.job(d.env.jobId)],
      [GROUP, this.consumer, d.env.entryId, d.token, d.env.jobId, Date.now(), mode, delayMs, error.slice(0, 4096),
        reason, this.o.maxAttempts, this.o.eventsMaxlen, this.o.retentionMs])) as number[];
    if (code === 3) this.dead++;
    else if (code === 1 || code === 2) this.failed++;
  }

  protected async deadLetterRefused(stream: string, eid: string, fields: [Buffer, Buffer][], token: number,
    refused: Refused): Promise<void> {
    const jid = jobIdOf(eid, fields, this.suffix(stream));
    const k = this.keys;
    await script("fail.lua").run(this.redis,
      [stream, k.delayed, k.scheduled, k.index, k.dead, k.dead_index, k.events, k.job(jid)],
      [GROUP, this.consumer, eid, token, jid, Date.now(), "dead", 0, refused.message.slice(0, 4096), refused.reason,
        this.o.maxAttempts, this.o.eventsMaxlen, this.o.retentionMs]);
    this.dead++;
  }

  protected async update(d: Delivery, name: string, value: unknown): Promise<boolean> {
    d.touched = true;
    const got = await script("update.lua").run(this.redis, [d.stream, this.keys.job(d.env.jobId)],
      [GROUP, this.consumer, d.env.entryId, d.token, name, encode(value), this.o.retentionMs]);
    return got === 1;
  }

  protected async checkpoint(d: Delivery, state: unknown, label: string): Promise<number | undefined> {
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

  protected async lastCheckpoint(d: Delivery): Promise<Checkpoint | undefined> {
    const got = await this.redis.xrevrangeBuffer(this.keys.checkpoints(d.env.jobId), "+", "-", "COUNT", 1);
    if (!got.length) return undefined;
    const f = Object.fromEntries(pairs(got[0][1]).map(([k, v]) => [k.toString(), v]));
    return { version: Number(text(f.version)), state: decode(f.state), label: text(f.label), ms: Number(text(f.ms)) };
  }

  protected async release(stream: string, deliveries: [string, number][]): Promise<void> {
    if (!deliveries.length) return;
    const args: (string | number)[] = [GROUP, this.consumer, Date.now(), this.o.eventsMaxlen];
    for (const [eid, token] of deliveries) args.push(eid, token);
    await script("release.lua").run(this.redis, [stream, this.keys.index, this.keys.events], args);
  }
}
