/** What keeps a worker's deliveries and the queue healthy beside the handlers (SPEC.md section 9, steps 4, 6 to 8;
 * sections 6c, 9a): lease renewal, letting go before a takeover, heartbeats, adoption of crashed workers, reclaim of
 * stalled jobs, promotion of due ones, and the hand-back at shutdown. */

import { hostname } from "node:os";
import { GROUP } from "../keys.js";
import { fireDue } from "../schedule.js";
import { script, text } from "../scripts.js";
import { CRASH_AFTER_MS, type Delivery, HEARTBEATS_MAXLEN, RECORD_TTL_MS, sleep } from "./base.js";
import { Settling } from "./settle.js";

/** The record's expiry is set on registration and then hourly (a beat in plain commands leaves it). */
const TTL_REFRESH_MS = 3600_000;
/** The longest a reading of the server's clock serves beats in plain commands (the monotonic clock fills in
 * between); each such beat takes a new one. */
const CLOCK_READ_MS = 60_000;

export abstract class Upkeep<T> extends Settling<T> {
  /** A fire time the server's clock has not reached (this host's runs ahead) is not tried again before this. */
  private holdFiresUntil = 0;
  /** When a beat last set the record's expiry (monotonic ms). */
  private ttlSet = -Infinity;
  /** The server's clock as tracked: a `TIME` reading, ms, and the monotonic instant it stands for. */
  private clock: { ms: number; at: number } | undefined;

  protected async maintain(): Promise<void> {
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
            if (now < this.releaseUntil) await this.releasePending(true);
            await this.adopt();
            await this.reclaim(cursors);
            nextReclaim = now + this.o.reclaimEveryMs;
          }
          if (now >= nextPromote) {
            nextPromote = now + 1000; // kept if it fails
            nextPromote = now + (await this.promote());
          }
        }
      } catch (e) {
        if (!this.stopping) console.warn(`rill: maintenance failed: ${e}`);
      }
      await sleep(Math.min(50, renewEvery));
    }
  }

  protected async renew(): Promise<void> {
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
  protected giveUpOverdue(): void {
    const now = Date.now();
    const silent = now - this.beatLanded > (CRASH_AFTER_MS * 2) / 3;
    for (const d of [...this.held.values()]) if (silent || now - d.renewed > (this.leaseMs * 2) / 3) this.lose(d);
  }

  /** Hands back, uncounted, what is pending to this consumer (a read that landed late, a job given up); with
   * `skipHeld`, not the deliveries it still holds. */
  protected async releasePending(skipHeld: boolean): Promise<void> {
    const mine = new Set(skipHeld ? [...this.held.values()].map((d) => `${d.stream} ${d.env.entryId}`) : []);
    for (const stream of this.streams()) {
      const pending = (await this.redis.xpending(stream, GROUP, "-", "+", 10_000, this.consumer)) as [string, string, number, number][];
      await this.release(stream, pending.filter((p) => !mine.has(`${stream} ${p[0]}`)).map((p) => [p[0], Number(p[3])]));
    }
  }

  protected lose(d: Delivery): void {
    this.leaseFailures++;
    d.lost = true;
    d.abort.abort(new Error("lease lost"));
    if (this.held.get(d.address) === d) this.held.delete(d.address);
  }

  protected async beat(): Promise<void> {
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
    let registered: boolean;
    let crashed: Buffer[];
    if (this.registered && performance.now() - this.ttlSet < TTL_REFRESH_MS) {
      // Registered, the expiry not due: the same writes in plain commands, which cost Redis less than the script
      // (SPEC.md section 6c), judged by the server's clock as this worker tracks it.
      const now = await this.serverNowMs();
      const asked = performance.now();
      const replies = await this.redis.pipeline()
        .hset(k.worker(this.consumer), "last_beat_ms", now, ...fields)
        .zadd(k.workers, "XX", "CH", now, this.consumer)
        .zrangebyscoreBuffer(k.workers, "-inf", `(${now - CRASH_AFTER_MS}`, "LIMIT", 0, 8)
        .xadd(k.heartbeats, "MAXLEN", "~", HEARTBEATS_MAXLEN, "*", "worker", this.consumer, "ms", now, ...perBeat)
        // The server's clock read with every beat, for the next one: ioredis reconnects out of sight (after a
        // failover, to a server whose clock may differ), so a reading kept for a minute could be off that long.
        .time()
        .exec();
      for (const [err] of replies ?? []) if (err) throw err;
      const [secs, micros] = replies![4][1] as [string, string];
      this.readClock(secs, micros, asked);
      const [created, scored] = [Number(replies![0][1]), Number(replies![1][1])];
      crashed = replies![2][1] as Buffer[];
      // A field created: no record was there; not scored: not in the registry (XX never adds it).
      registered = created === 0 && scored === 1;
    } else {
      const started = performance.now();
      const [, created, listed] = (await script("heartbeat.lua").run(this.redis,
        [k.workers, k.worker(this.consumer), k.heartbeats],
        [this.consumer, 0, HEARTBEATS_MAXLEN, RECORD_TTL_MS, CRASH_AFTER_MS, perBeat.length / 2, ...fields])) as [
        unknown, number, Buffer[]];
      this.ttlSet = started;
      crashed = listed;
      // The per-beat fields alone created fields: no record was there (Redis lost it, or others judged this
      // worker crashed).
      registered = !this.registered || Number(created) === 0;
    }
    this.beatenFailures = failures;
    this.beatLanded = sent;
    // Unregistered, the next beat sends the static fields again, through the script.
    this.registered = registered;
    this.crashed = crashed.map(text);
  }

  /** The Redis server's clock, ms: a `TIME` reading (the last beat's, or taken here when over a minute old) plus
   * the monotonic time since, counted from the middle of its round trip. Beats are judged by the server's clock, so
   * hosts whose clocks disagree agree on them. */
  private async serverNowMs(): Promise<number> {
    if (!this.clock || performance.now() - this.clock.at >= CLOCK_READ_MS) {
      const sent = performance.now();
      const [secs, micros] = await this.redis.time();
      this.readClock(secs, micros, sent);
    }
    return this.clock!.ms + Math.floor(performance.now() - this.clock!.at);
  }

  /** Tracks the server's clock from a `TIME` reply to a call sent at `asked` (monotonic ms): the reading stands for
   * the middle of the round trip. */
  private readClock(secs: string | number, micros: string | number, asked: number): void {
    this.clock = { ms: Number(secs) * 1000 + Math.floor(Number(micros) / 1000), at: (asked + performance.now()) / 2 };
  }

  protected async adopt(): Promise<void> {
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

  protected async reclaim(cursors: Map<string, string>): Promise<void> {
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

  /** Promotes due jobs and fires due schedules; returns how long to wait before the next call (ms). */
  protected async promote(): Promise<number> {
    const k = this.keys;
    const out = (await script("promote.lua").run(this.redis,
      [k.delayed, k.scheduled, k.ready, k.index, k.events, k.schedules, k.limit, ...k.levelTail()],
      [0, 1000, this.o.eventsMaxlen])) as unknown[];
    if (this.setLevels(text(out[5]), text(out[6]))) await this.createGroups();
    this.limited = Number(out[3]) !== 0;
    let nextFire = Number(text(out[2]));
    const now = Date.now();
    if (nextFire >= 0 && nextFire <= now && now >= this.holdFiresUntil) {
      const hold = await fireDue(this.redis, k, this.o.eventsMaxlen, now, k.levelTail());
      if (hold !== undefined) this.holdFiresUntil = Date.now() + hold;
      nextFire = -1; // looked at now; the next call reads what it became
    }
    // Until the next due job or fire time, at most a second (others may add earlier ones); a fire time the
    // server's clock has not reached yet waits for the hold.
    const soonest = [Number(text(out[1])), nextFire].filter((x) => x >= 0).map((x) => Math.max(x - now, 10));
    return Math.max(Math.min(1000, ...soonest), this.holdFiresUntil - Date.now());
  }

  protected async shutdown(): Promise<void> {
    this.askToYield(); // long jobs checkpoint and yield: they resume elsewhere at once
    const deadline = Date.now() + Math.max(30_000, this.leaseMs);
    while (this.held.size > 0 && Date.now() < deadline) await sleep(20);
    await Promise.allSettled([...this.running]);
    for (const c of this.conns) c.disconnect();
    await Promise.allSettled(this.loops);
    try {
      await this.releasePending(false);
      for (const stream of this.streams()) await script("retire.lua").run(this.redis, [stream], [GROUP, this.consumer]);
      // A graceful exit leaves the registry (SPEC.md section 6c).
      await this.redis.del(this.keys.worker(this.consumer));
      await this.redis.zrem(this.keys.workers, this.consumer);
    } catch (e) {
      console.warn(`rill: could not retire ${this.consumer}: ${e}`);
    }
  }
}
