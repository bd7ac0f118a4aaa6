/** Schedules (SPEC.md section 6e): jobs enqueued at the times a cron expression matches in an IANA time zone, or at
 * a fixed interval, stored in Redis and fired by whichever workers of the queue run (any language), each fire time
 * once: `fire.lua` enqueues only while the schedule still waits for the time the caller read.
 *
 * ```ts
 * await queue.schedule("nightly-report", Schedule.cron("0 3 * * *", { tz: "Europe/Berlin" }), { kind: "full" });
 * await queue.schedule("poll", Schedule.every(30_000, { missed: "skip" }), null);
 * ```
 *
 * Cron expressions are read by croner, as rill's Rust workers read them (the same project's Rust port): five
 * fields, or six with seconds first, `@daily` and the like, `L`, `#`, `W`. They are matched on the zone's wall
 * clock and placed in the zone as the Rust port places them (SPEC.md section 6e): a time that happens twice fires
 * once, the first time; one in a daylight-saving gap is skipped, unless the expression names a single time of
 * day, which then fires at the gap's end. */

import { Cron } from "croner";
import type { Redis } from "ioredis";
import { InvalidOption } from "./errors.js";
import { LEVELS, type QueueKeys, validateName } from "./keys.js";
import { fields, script, text } from "./scripts.js";
import { decode, encode } from "./wire.js";

/** How late a fire time may run and still count as on time (a worker woke late, Redis was away briefly). */
export const ON_TIME_MS = 60_000;
/** Most fire times looked at when catching up after a long gap; the missed policy applies to the newest. */
const MAX_CATCH_UP = 10_000;
/** The next fire time of a schedule that never fires again, as every rill client writes it (2^64 − 1). */
export const NEVER = 18446744073709551615n;
const FIELDS = ["kind", "cron", "tz", "every_ms", "missed", "missed_max", "priority"] as const;
const SCHEDULES_PER_WAKE = 16;

/** What to do with fire times that passed while no worker ran: `once` (default: one job for all of them, carrying
 * the newest), `skip` (none) or `all` (each, the newest `missedMax`). */
export type Missed = "skip" | "once" | "all";

export interface ScheduleOptions {
  missed?: Missed;
  /** For `missed: "all"`: at most this many missed times run. */
  missedMax?: number;
  /** The priority level of the jobs it enqueues (default 0). */
  priority?: number;
}

const ALIASES: Record<string, string> = {
  "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
};

/** Whether `expr` names one time of day (one second, minute and hour, no step): croner's fixed-time job, which a
 * daylight-saving gap moves to the first time after it rather than skipping. */
function fixedTime(expr: string): boolean {
  const f = (ALIASES[expr.trim().toLowerCase()] ?? expr).trim().split(/\s+/);
  const secMinHour = f.length === 5 ? ["0", f[0], f[1]] : f.slice(0, 3);
  return secMinHour.every((x) => /^\d+$/.test(x));
}

/** The UTC offset of `zone` at instant `s` (seconds), seconds. */
function offset(zone: Intl.DateTimeFormat, s: number): number {
  const name = zone.formatToParts(new Date(s * 1000)).find((p) => p.type === "timeZoneName")?.value ?? "GMT";
  const m = /GMT([+-])(\d{1,2}):?(\d{2})?/.exec(name);
  return m ? (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 3600 + Number(m[3] ?? 0) * 60) : 0;
}

/** The instant (s) wall-clock time `wall` (seconds, counted as if in UTC) names in `zone`, as croner places it: a
 * time that happens twice is its first; one in a gap is skipped (undefined), or for a fixed-time job moved to the
 * gap's end, when that is still the same day. */
function place(zone: Intl.DateTimeFormat, wall: number, fixed: boolean): number | undefined {
  const before = offset(zone, wall - 86400), after = offset(zone, wall + 86400);
  const valid = [...new Set([before, after])].sort((a, b) => b - a).filter((o) => offset(zone, wall - o) === o);
  if (valid.length > 0) return wall - valid[0];
  if (!fixed || after <= before) return undefined;
  let lo = wall - after, hi = wall - before; // the change of offset lies between
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (offset(zone, mid) === after) hi = mid;
    else lo = mid;
  }
  return Math.floor((hi + after) / 86400) === Math.floor(wall / 86400) ? hi : undefined;
}

export class Schedule {
  private constructor(
    readonly kind: "cron" | "every",
    readonly expr: string | undefined,
    readonly tz: string,
    readonly everyMs: number | undefined,
    readonly missed: Missed,
    readonly missedMax: number,
    readonly priority: number,
  ) {}

  /** Fires at the times cron expression `expr` matches in zone `tz` (IANA name, default UTC). */
  static cron(expr: string, o: ScheduleOptions & { tz?: string } = {}): Schedule {
    const s = new Schedule("cron", expr, o.tz ?? "UTC", undefined, o.missed ?? "once",
      Schedule.max(o), o.priority ?? 0);
    s.check();
    if (s.nextAfter(Date.now()) === undefined) throw new InvalidOption("schedule", "it never fires after now");
    return s;
  }

  /** Fires every `intervalMs` (at least 1 s), first one interval after it is added. */
  static every(intervalMs: number, o: ScheduleOptions = {}): Schedule {
    if (!Number.isInteger(intervalMs) || intervalMs < 1000) {
      throw new InvalidOption("schedule", "an interval must be at least 1 s (1000 ms)");
    }
    const s = new Schedule("every", undefined, "UTC", intervalMs, o.missed ?? "once", Schedule.max(o),
      o.priority ?? 0);
    s.check();
    return s;
  }

  private static max(o: ScheduleOptions): number {
    return o.missedMax ?? ((o.missed ?? "once") === "once" ? 1 : 0);
  }

  private check(): void {
    if (!["skip", "once", "all"].includes(this.missed)) throw new InvalidOption("schedule", "missed is skip, once or all");
    if (this.missed === "all" && !(Number.isInteger(this.missedMax) && this.missedMax >= 1)) {
      throw new InvalidOption("schedule", 'missed "all" needs missedMax of at least 1');
    }
    if (!Number.isInteger(this.priority) || this.priority < 0 || this.priority >= LEVELS) {
      throw new InvalidOption("schedule", "priority levels are 0 to 15");
    }
    if (this.kind === "cron") this.cronOf();
  }

  /** The croner pattern (matching wall-clock times, placed in the zone by `place`) and the zone's formatter;
   * `InvalidOption` for an expression or zone it cannot read. */
  private cronOf(): [Cron, Intl.DateTimeFormat] {
    let zone: Intl.DateTimeFormat;
    try {
      zone = new Intl.DateTimeFormat("en-US", { timeZone: this.tz, timeZoneName: "longOffset" });
    } catch {
      throw new InvalidOption("schedule", `${JSON.stringify(this.tz)} is not an IANA time zone name`);
    }
    try {
      return [new Cron(this.expr ?? "", { timezone: "UTC", paused: true }), zone];
    } catch {
      throw new InvalidOption("schedule", `not a cron expression croner reads: ${JSON.stringify(this.expr)}`);
    }
  }

  /** Its fields in the schedule's hash (SPEC.md section 6e). */
  fields(): Record<string, string | number> {
    const f: Record<string, string | number> = {
      kind: this.kind, missed: this.missed, missed_max: this.missedMax, priority: this.priority,
    };
    if (this.kind === "cron") Object.assign(f, { cron: this.expr ?? "", tz: this.tz });
    else f.every_ms = this.everyMs ?? 0;
    return f;
  }

  /** A definition read back from its hash fields, or undefined if it does not read as one. */
  static fromFields(f: Record<string, string | undefined>): Schedule | undefined {
    const missed = (f.missed ?? "once") as Missed;
    const max = Number(f.missed_max ?? 1), priority = Number(f.priority ?? 0);
    if (!["skip", "once", "all"].includes(missed) || !Number.isInteger(max) || !Number.isInteger(priority)) return undefined;
    if (f.kind === "cron" && f.cron !== undefined) {
      return new Schedule("cron", f.cron, f.tz ?? "UTC", undefined, missed, max, priority);
    }
    const every = Number(f.every_ms);
    if (f.kind === "every" && Number.isInteger(every)) {
      return new Schedule("every", undefined, "UTC", every, missed, max, priority);
    }
    return undefined;
  }

  /** `cron 0 3 * * * Europe/Berlin` or `every 30s`. */
  describe(): string {
    return this.kind === "cron" ? `cron ${this.expr} ${this.tz}` : `every ${(this.everyMs ?? 0) / 1000}s`;
  }

  /** The first fire time after `afterMs`, or undefined if it never fires again. Throws `InvalidOption` for an
   * expression or zone croner cannot read. */
  nextAfter(afterMs: number): number | undefined {
    if (this.kind === "every") return afterMs + (this.everyMs ?? 0);
    const [cron, zone] = this.cronOf();
    const fixed = fixedTime(this.expr ?? "");
    const afterS = Math.floor(afterMs / 1000);
    let wall = new Date((afterS + offset(zone, afterS)) * 1000);
    for (let i = 0; i < 100_000; i++) {
      const next = cron.nextRun(wall);
      if (!next) return undefined;
      const at = place(zone, next.getTime() / 1000, fixed);
      if (at !== undefined && at > afterS) return at * 1000;
      wall = next;
    }
    return undefined;
  }

  /** What a worker firing at `now` (ms) does with next fire time `t`: the fire times to enqueue and the next fire
   * time (`undefined`: never). Every fire time from `t` up to `now` is due; one due time, on time, fires;
   * otherwise the missed policy picks (SPEC.md section 6e). */
  plan(t: number, now: number): { fires: number[]; next: number | undefined } {
    let due: number[];
    let next: number | undefined;
    if (this.kind === "every") {
      const step = Math.max(this.everyMs ?? 1, 1);
      const behind = Math.floor(Math.max(now - t, 0) / step);
      const keep = Math.min(behind, MAX_CATCH_UP - 1);
      due = [];
      for (let k = behind - keep; k <= behind; k++) due.push(t + k * step);
      next = t + (behind + 1) * step;
    } else {
      due = [t];
      next = this.nextAfter(t);
      while (next !== undefined && next <= now) {
        due.push(next);
        if (due.length > MAX_CATCH_UP) due.shift();
        next = this.nextAfter(next);
      }
    }
    const newest = due[due.length - 1];
    const onTime = now - newest <= ON_TIME_MS;
    let fires: number[];
    if (due.length === 1 && onTime) fires = due;
    else if (this.missed === "skip") fires = onTime ? [newest] : [];
    else if (this.missed === "once") fires = [newest];
    else fires = due.slice(Math.max(due.length - this.missedMax, 0));
    return { fires, next };
  }
}

/** One schedule as stored; `nextMs` is undefined while paused or if it never fires again. */
export interface ScheduleInfo {
  name: string;
  schedule: Schedule;
  /** The job data each fire enqueues (CBOR). */
  payload: Buffer;
  paused: boolean;
  nextMs?: number;
  lastFireMs?: number;
  fired: number;
}

/** Adds or replaces schedule `name` of the queue with `keys` (its counters stay; a paused one stays paused). */
export async function addSchedule(redis: Redis, keys: QueueKeys, name: string, s: Schedule, data: unknown,
  maxPayload: number): Promise<void> {
  validateName(name);
  if (!(s instanceof Schedule)) throw new InvalidOption("schedule", "use Schedule.cron(...) or Schedule.every(...)");
  const payload = encode(data, maxPayload);
  const now = Date.now();
  const next = s.nextAfter(now);
  if (next === undefined) throw new InvalidOption("schedule", "it never fires after now");
  const key = keys.schedule(name);
  const paused = (await redis.hget(key, "paused")) === "1";
  await redis.multi()
    .hset(key, { payload, next_ms: next, updated_ms: now, ...s.fields() })
    .hsetnx(key, "created_ms", now)
    .zadd(keys.schedules, paused ? "+inf" : next, name)
    .exec();
}

/** Schedule `name` as stored, or undefined. */
export async function scheduleInfo(redis: Redis, keys: QueueKeys, name: string): Promise<ScheduleInfo | undefined> {
  const raw = (await redis.callBuffer("HGETALL", keys.schedule(name))) as Buffer[];
  const f = fields(raw);
  const s = Schedule.fromFields(f);
  if (!s) return undefined;
  let payload: Buffer = Buffer.alloc(0);
  for (let i = 0; i + 1 < raw.length; i += 2) if (text(raw[i]) === "payload") payload = raw[i + 1];
  const num = (k: string) => (f[k] === undefined || Number.isNaN(Number(f[k])) ? undefined : Number(f[k]));
  const paused = f.paused === "1";
  const next = f.next_ms === undefined || BigInt(f.next_ms) >= NEVER ? undefined : num("next_ms");
  return { name, schedule: s, payload, paused, nextMs: paused ? undefined : next, lastFireMs: num("last_fire_ms"),
    fired: num("fired") ?? 0 };
}

/** A schedule's payload, decoded. */
export function schedulePayload(info: ScheduleInfo): unknown {
  return decode(info.payload);
}

/** Sets `values` in schedule `name`'s hash and its score in the set together, only if it still exists (`WATCH`ed, on
 * a connection of its own: a schedule removed meanwhile must not come back as a stray member and half a hash). */
export async function setScheduleState(redis: Redis, keys: QueueKeys, name: string,
  values: Record<string, string | number>, score: string | number): Promise<boolean> {
  const key = keys.schedule(name);
  const conn = redis.duplicate();
  try {
    for (;;) {
      await conn.watch(key);
      if (!(await conn.exists(key))) {
        await conn.unwatch();
        return false;
      }
      const done = await conn.multi().hset(key, values).zadd(keys.schedules, score, name).exec();
      if (done !== null) return true;
    }
  } finally {
    conn.disconnect();
  }
}

/** Fires the schedules of the queue with `keys` due at `now` (this host's clock) through `fire.lua`. Returns how
 * long (ms) to hold off when the server's clock says one is not due yet. */
export async function fireDue(redis: Redis, keys: QueueKeys, eventsMaxlen: number, now: number,
  levelTail: string[]): Promise<number | undefined> {
  const due = await redis.zrangebyscore(keys.schedules, "-inf", now, "WITHSCORES", "LIMIT", 0, SCHEDULES_PER_WAKE);
  for (let i = 0; i + 1 < due.length; i += 2) {
    const name = due[i], t = Number(due[i + 1]);
    const raw = await redis.hmget(keys.schedule(name), ...FIELDS);
    const f: Record<string, string | undefined> = {};
    FIELDS.forEach((k, j) => (f[k] = raw[j] ?? undefined));
    const s = Schedule.fromFields(f);
    // Written by something that does not follow SPEC.md section 6e: moved to "never" (fire.lua drops a member
    // without a hash), as every rill worker does.
    if (!s) console.warn(`rill: schedule ${name} of ${keys.queue} is unreadable: it will not fire`);
    let clock = now;
    for (let attempt = 0; attempt < 2; attempt++) { // on this host's clock, then (if that runs ahead) the server's
      let plan: { fires: number[]; next: number | undefined };
      try {
        plan = s ? s.plan(t, clock) : { fires: [], next: undefined };
      } catch (e) {
        // An expression croner here cannot read: left to the workers that can fire it.
        console.warn(`rill: schedule ${name} of ${keys.queue} left to other workers: ${e}`);
        break;
      }
      const next = plan.next === undefined ? NEVER.toString() : plan.next;
      const [code, , serverNowRaw] = (await script("fire.lua").run(redis,
        [keys.schedules, keys.schedule(name), keys.ready, keys.events, ...levelTail],
        [name, t, next, eventsMaxlen, ...plan.fires])) as [number, number, Buffer];
      const serverNow = Number(text(serverNowRaw));
      if (code === -1 && t <= serverNow && clock !== serverNow) {
        clock = serverNow; // due by the server's clock, but this host's asked for later times too
        continue;
      }
      if (code === -1) return Math.min(Math.max(t - serverNow, 10), 1000);
      break;
    }
  }
  return undefined;
}
