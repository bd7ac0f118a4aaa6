/** Schedules (SPEC.md section 6e): fire times as rill's Rust workers compute them (croner's Rust port; the expected
 * instants below are what it gives), across daylight-saving changes; the missed-fire policies; managing schedules
 * in Redis; workers firing each fire time exactly once. */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Client, InvalidName, InvalidOption, Schedule, schedulePayload, Worker } from "../src/index.js";
import { RedisServer, namespace, until } from "./support.js";

let server: RedisServer;
before(async () => {
  server = await RedisServer.start();
});
after(() => server.stop());

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const utc = (iso: string) => Date.parse(`${iso}Z`);

function times(s: Schedule, start: number, n: number): number[] {
  const out: number[] = [];
  let t = start;
  for (let i = 0; i < n; i++) {
    t = s.nextAfter(t) as number;
    out.push(t);
  }
  return out;
}

test("cron times follow the zone across daylight-saving changes as the Rust workers' do", () => {
  const berlin = Schedule.cron("30 2 * * *", { tz: "Europe/Berlin" });
  // 2026-03-29: 02:30 does not exist in Berlin: it runs at 03:00 CEST; the next night at 00:30 UTC.
  assert.deepEqual(times(berlin, utc("2026-03-28T11:00"), 2), [utc("2026-03-29T01:00"), utc("2026-03-30T00:30")]);
  // 2026-10-25: 02:30 happens twice: it runs the first time only.
  assert.deepEqual(times(berlin, utc("2026-10-24T11:00"), 2), [utc("2026-10-25T00:30"), utc("2026-10-26T01:30")]);
  const hourly = Schedule.cron("0 * * * *", { tz: "Europe/Berlin" });
  assert.deepEqual(times(hourly, utc("2026-10-24T23:10"), 3),
    [utc("2026-10-25T00:00"), utc("2026-10-25T02:00"), utc("2026-10-25T03:00")]);
  const half = Schedule.cron("*/30 * * * *", { tz: "Europe/Berlin" });
  assert.deepEqual(times(half, utc("2026-03-29T00:10"), 3),
    [utc("2026-03-29T00:30"), utc("2026-03-29T01:00"), utc("2026-03-29T01:30")]);
  assert.deepEqual(times(Schedule.cron("30 2 * * *"), utc("2026-03-28T11:00"), 1), [utc("2026-03-29T02:30")]);
  // A zone west of UTC, and one with a half-hour offset.
  assert.deepEqual(times(Schedule.cron("0 1 * * *", { tz: "America/New_York" }), utc("2026-11-01T00:00"), 2),
    [utc("2026-11-01T05:00"), utc("2026-11-02T06:00")]);
  assert.deepEqual(times(Schedule.cron("0 0 * * *", { tz: "Asia/Kolkata" }), utc("2026-01-01T00:00"), 1),
    [utc("2026-01-01T18:30")]);
});

test("croner's extensions, seconds and intervals", () => {
  assert.deepEqual(times(Schedule.cron("0 0 * * 5L", { tz: "Europe/Berlin" }), utc("2026-10-24T00:00"), 2),
    [utc("2026-10-29T23:00"), utc("2026-11-26T23:00")]);
  assert.deepEqual(times(Schedule.cron("0 0 15W * *", { tz: "Europe/Berlin" }), utc("2026-07-20T00:00"), 1),
    [utc("2026-08-13T22:00")]);
  assert.deepEqual(times(Schedule.cron("0 0 * * 5#2"), utc("2026-01-01T00:00"), 1), [utc("2026-01-09T00:00")]);
  // Day of month and day of week: either matches (Vixie cron).
  assert.deepEqual(times(Schedule.cron("0 0 13 * 5"), utc("2026-01-01T00:00"), 3),
    [utc("2026-01-02T00:00"), utc("2026-01-09T00:00"), utc("2026-01-13T00:00")]);
  assert.deepEqual(times(Schedule.cron("*/15 * * * * *"), utc("2026-01-01T00:00") + 500, 2),
    [utc("2026-01-01T00:00:15"), utc("2026-01-01T00:00:30")]);
  assert.deepEqual(times(Schedule.cron("@daily"), utc("2026-01-01T05:00"), 1), [utc("2026-01-02T00:00")]);
  assert.deepEqual(times(Schedule.every(30_000), 1000, 2), [31_000, 61_000]);
  for (const bad of [() => Schedule.cron("not cron"), () => Schedule.cron("0 3 * * *", { tz: "Mars/Olympus" }),
    () => Schedule.every(500), () => Schedule.every(5000, { missed: "all" }),
    () => Schedule.every(5000, { priority: 16 }), () => Schedule.cron("0 0 30 2 *")]) {
    assert.throws(bad, InvalidOption);
  }
});

test("one due time on time fires; missed ones follow the policy", () => {
  const M = 60_000;
  for (const o of [{ missed: "skip" as const }, { missed: "once" as const }, { missed: "all" as const, missedMax: 3 }]) {
    assert.deepEqual(Schedule.cron("* * * * *", o).plan(10 * M, 10 * M + 5000), { fires: [10 * M], next: 11 * M });
  }
  // Five minutes without a worker, woken 30 s into the sixth.
  const now = 15 * M + 30_000;
  assert.deepEqual(Schedule.cron("* * * * *", { missed: "skip" }).plan(10 * M, now), { fires: [15 * M], next: 16 * M });
  assert.deepEqual(Schedule.cron("* * * * *").plan(10 * M, now), { fires: [15 * M], next: 16 * M });
  assert.deepEqual(Schedule.cron("* * * * *", { missed: "all", missedMax: 3 }).plan(10 * M, now),
    { fires: [13 * M, 14 * M, 15 * M], next: 16 * M });
  // The newest missed time itself too old: skip runs nothing.
  const H = 3600_000;
  assert.deepEqual(Schedule.every(H, { missed: "skip" }).plan(0, 2 * H + 120_000), { fires: [], next: 3 * H });
  const year10 = 10 * 365 * 24 * H;
  const p = Schedule.every(1000, { missed: "all", missedMax: 1_000_000 }).plan(0, year10);
  assert.deepEqual([p.fires.length, p.fires[p.fires.length - 1], p.next], [10_000, year10, year10 + 1000]);
});

test("schedules are stored as SPEC.md writes them, listed, paused, resumed and removed", async () => {
  const c = new Client(server.url, { namespace: namespace() });
  try {
    const q = c.queue("reports");
    const before = Date.now();
    const info = await q.schedule("nightly", Schedule.cron("0 3 * * *", { tz: "Europe/Berlin", priority: 1 }),
      { kind: "full" });
    assert.deepEqual([info.name, info.paused, info.fired, schedulePayload(info)], ["nightly", false, 0, { kind: "full" }]);
    assert.ok((info.nextMs ?? 0) > before);
    const h = await c.redis.hgetall(q.keys.schedule("nightly"));
    assert.deepEqual([h.kind, h.cron, h.tz, h.missed, h.missed_max, h.priority],
      ["cron", "0 3 * * *", "Europe/Berlin", "once", "1", "1"]);
    assert.equal(Number(await c.redis.zscore(q.keys.schedules, "nightly")), info.nextMs);
    assert.deepEqual(await c.redis.smembers(q.keys.queues), ["reports"]);
    await q.schedule("poll", Schedule.every(30_000, { missed: "all", missedMax: 5 }));
    assert.deepEqual((await q.schedules()).map((s) => s.name), ["nightly", "poll"]);
    assert.deepEqual((await q.scheduleInfo("poll"))?.schedule, Schedule.every(30_000, { missed: "all", missedMax: 5 }));

    assert.equal(await q.pauseSchedule("poll"), true);
    assert.equal(await c.redis.zscore(q.keys.schedules, "poll"), "inf");
    assert.equal((await q.scheduleInfo("poll"))?.nextMs, undefined);
    await q.schedule("poll", Schedule.every(60_000), "new"); // a paused schedule stays paused
    assert.equal((await q.scheduleInfo("poll"))?.paused, true);
    assert.equal(await q.resumeSchedule("poll"), true);
    const p = await q.scheduleInfo("poll");
    assert.equal(p?.paused, false);
    assert.ok(Math.abs((p?.nextMs ?? 0) - (Date.now() + 60_000)) < 2000);

    assert.equal(await q.removeSchedule("poll"), true);
    assert.equal(await q.removeSchedule("poll"), false);
    assert.equal(await q.pauseSchedule("poll"), false);
    assert.equal(await q.resumeSchedule("poll"), false);
    assert.equal(await c.redis.zscore(q.keys.schedules, "poll"), null);
    await assert.rejects(q.schedule("a:b", Schedule.every(5000)), InvalidName);
  } finally {
    await c.close();
  }
});

test("two workers fire each time once; jobs carry the schedule; missed times follow the policy", async () => {
  const c = new Client(server.url, { namespace: namespace() });
  const ran: { name: string; fireMs: number }[] = [];
  const workers = [0, 1].map(() => new Worker(c, "ticks", async (job) => {
    if (job.schedule) ran.push(job.schedule);
  }, { concurrency: 4, blockMs: 200 }));
  try {
    const q = c.queue("ticks");
    const now = Date.now();
    for (const [name, s] of [["skip", Schedule.every(3600_000, { missed: "skip" })],
      ["all", Schedule.every(3600_000, { missed: "all", missedMax: 2 })], ["once", Schedule.every(3600_000)]] as const) {
      await q.schedule(name, s, name);
      await c.redis.zadd(q.keys.schedules, now - 3.5 * 3600_000, name); // as if no worker ran for 3.5 hours
    }
    await q.schedule("tick", Schedule.every(1000), { n: 1 });
    for (const w of workers) void w.run();
    await until("four ticks", () => ran.filter((r) => r.name === "tick").length >= 4);
    await sleep(300);
    const ticks = ran.filter((r) => r.name === "tick").map((r) => r.fireMs).sort((a, b) => a - b);
    assert.equal(new Set(ticks).size, ticks.length, "a fire time ran twice");
    assert.ok(ticks.every((t, i) => i === 0 || t - ticks[i - 1] === 1000), `${ticks}`);
    assert.deepEqual(ran.filter((r) => r.name !== "tick").map((r) => r.name).sort(), ["all", "all", "once"]);
    assert.ok(((await q.scheduleInfo("tick"))?.fired ?? 0) >= ticks.length);
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await c.close();
  }
});
