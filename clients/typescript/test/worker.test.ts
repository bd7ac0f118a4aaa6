/** The worker against a private Redis: jobs run and their results are kept; retries, permanent failures and
 * exhausted attempts end where SPEC.md says; refused entries are dead-lettered with their reason; a delivery
 * someone else took over writes nothing; stalled and crashed workers' jobs are taken back; a handler past its time
 * limit loses its slot; signals, checkpoints, priority levels and limits; shutdown leaves nothing behind. */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Client, GROUP, Interrupted, Permanent, Retry, Worker, type Handler, type WorkerOptions } from "../src/index.js";
import { RedisServer, namespace, until } from "./support.js";

let server: RedisServer;
before(async () => {
  server = await RedisServer.start();
});
after(() => server.stop());

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

async function withWorkers(f: (c: Client, start: <T>(h: Handler<T>, o?: WorkerOptions<T>) => Worker<T>) => Promise<void>) {
  const c = new Client(server.url, { namespace: namespace() });
  const workers: Worker<unknown>[] = [];
  const start = <T>(h: Handler<T>, o: WorkerOptions<T> = {}) => {
    const w = new Worker<T>(c, "jobs", h, { blockMs: 200, ...o });
    void w.run();
    workers.push(w as Worker<unknown>);
    return w;
  };
  try {
    await f(c, start);
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await c.close();
  }
}

test("jobs run and their results are kept; a stopped worker leaves nothing behind", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    const ids = [...(await Promise.all(Array.from({ length: 20 }, (_, i) => q.enqueue({ n: i })))),
      await q.enqueue({ n: 20 }, { id: "named" })];
    const w = start<{ n: number }>(async (job) => ({ double: job.payload.n * 2, attempt: job.attempt }), { concurrency: 4 });
    await until("all done", () => w.completed === 21);
    for (const [i, id] of ids.entries()) assert.deepEqual(await q.result(id), { double: i * 2, attempt: 1 });
    await w.close();
    assert.equal(((await c.redis.xpending(q.keys.ready, GROUP)) as unknown[])[0], 0);
    assert.deepEqual(await c.redis.xinfo("CONSUMERS", q.keys.ready, GROUP), []);
    assert.equal(await c.redis.exists(q.keys.worker(w.consumer)), 0);
  }));

test("retries, permanent failures and exhausted attempts", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    await q.enqueue("flaky", { id: "flaky" });
    await q.enqueue("doomed", { id: "doomed" });
    await q.enqueue("broken", { id: "broken", maxAttempts: 2 });
    start<string>(async (job) => {
      if (job.payload === "flaky" && job.attempt === 1) throw new Retry("not yet", 50);
      if (job.payload === "doomed") throw new Permanent("no such address");
      if (job.payload === "broken") throw new TypeError("bug");
      return job.attempt;
    });
    await until("all ended", async () => new Set(await Promise.all(["flaky", "doomed", "broken"].map((j) => q.state(j))))
      .size === 2 && (await q.state("flaky")) === "completed");
    await until("both dead", async () => (await q.state("doomed")) === "dead" && (await q.state("broken")) === "dead");
    assert.equal(await q.result("flaky"), 2);
    const doomed = await q.job("doomed");
    assert.match(doomed.error ?? "", /no such address/);
    const broken = await q.job("broken");
    assert.equal(broken.attempts, 2);
    assert.match(broken.error ?? "", /TypeError: bug/);
  }));

test("refused entries are dead-lettered and the rest run", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    await c.redis.xadd(q.keys.ready, "*", "v", "2", "payload", Buffer.from("f6", "hex"), "id", "from-the-future");
    const junk = await c.redis.xadd(q.keys.ready, "*", "v", "1", "payload", Buffer.from("a161", "hex"));
    const good = await q.enqueue("fine");
    start(async () => "ok");
    await until("the good one ran", async () => (await q.state(good)) === "completed");
    await until("two dead letters", async () => (await c.redis.xlen(q.keys.dead)) === 2);
    const letters = Object.fromEntries((await c.redis.xrange(q.keys.dead, "-", "+")).map(([, f]) => {
      const o: Record<string, string> = {};
      for (let i = 0; i < f.length; i += 2) o[f[i]] = f[i + 1];
      return [o.dead_job, o];
    }));
    assert.deepEqual(Object.keys(letters).sort(), ["from-the-future", junk as string].sort());
    assert.equal(letters["from-the-future"].dead_reason, "malformed");
    assert.match(letters["from-the-future"].dead_error, /unsupported format version/);
    assert.match(letters[junk as string].dead_error, /does not decode/);
  }));

test("a delivery taken over writes nothing", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    await q.enqueue("slow", { id: "slow" });
    let started = false;
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const aborted: boolean[] = [];
    const w = start(async (job) => {
      started = true;
      await gate;
      aborted.push(job.signal.aborted);
      return "late";
    }, { leaseMs: 1500 });
    await until("running", () => started);
    const entry = (await q.job("slow")).entryId;
    await c.redis.xclaim(q.keys.ready, GROUP, "other", 0, entry);
    await until("the lease lost", () => w.leaseFailures > 0);
    release();
    await until("the handler returned", () => aborted.length === 1);
    assert.deepEqual(aborted, [true]);
    const info = await q.job("slow");
    assert.deepEqual([info.state, info.owner, info.deliveries], ["active", "other", 2]);
    assert.equal(w.completed, 0);
  }));

test("a crashed worker is adopted and its job resumes from its checkpoint", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    await c.redis.hset(q.keys.config, "lease_ms", 60_000);
    const id = await q.enqueue({ rows: 10 }, { id: "import" });
    await c.redis.xgroup("CREATE", q.keys.ready, GROUP, "0", "MKSTREAM");
    const [[, [[entry]]]] = (await c.redis.xreadgroup("GROUP", GROUP, "dead-worker", "COUNT", 1, "STREAMS",
      q.keys.ready, ">")) as [string, [string, string[]][]][];
    // The dead worker had saved a checkpoint (as its delivery, token 1), then stopped beating 10 s ago.
    await c.redis.xadd(q.keys.checkpoints(id), "*", "version", "3", "state", Buffer.from("a163726f7707", "hex"),
      "consumer", "dead-worker", "entry", entry, "token", "1", "ms", "1", "label", "row 7");
    await c.redis.zadd(q.keys.workers, Date.now() - 10_000, "dead-worker");
    await c.redis.hset(q.keys.worker("dead-worker"), "host", "gone", "last_beat_ms", 1);
    const seen: unknown[] = [];
    const w = start(async (job) => {
      const cp = await job.resume();
      seen.push([job.attempt, cp?.version, cp?.state, cp?.label]);
      assert.equal(await job.checkpoint({ row: 10 }), 4);
      return "resumed";
    });
    await until("adopted and run", async () => (await q.state(id)) === "completed", 10_000);
    assert.deepEqual(seen, [[2, 3, { row: 7 }, "row 7"]]);
    assert.equal(await c.redis.zscore(q.keys.workers, "dead-worker"), null);
    assert.equal(await c.redis.hget(q.keys.worker(w.consumer), "queue"), "jobs");
    const ttl = await c.redis.pttl(q.keys.checkpoints(id));
    assert.ok(ttl > 0 && ttl <= 24 * 3600 * 1000, String(ttl));
  }));

test("beats after registration are plain commands that notice a lost record", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    const w = start(async () => null);
    const record = q.keys.worker(w.consumer);
    await until("registered", async () => (await c.redis.hget(record, "host")) !== null);
    const first = Number(await c.redis.zscore(q.keys.workers, w.consumer));
    const ttl = await c.redis.pttl(record);
    await until("two more beats", async () => Number(await c.redis.zscore(q.keys.workers, w.consumer)) >= first + 1500,
      10_000);
    // heartbeat.lua would have set the expiry again every time.
    assert.ok((await c.redis.pttl(record)) < ttl - 1000, "the registration's expiry is left as it was");
    assert.equal(await c.redis.hget(record, "status"), "idle");
    // The record lost (Redis lost it, or others judged this worker crashed): the next beats register again.
    await c.redis.del(record);
    await until("registered again", async () => (await c.redis.hget(record, "host")) !== null, 10_000);
    assert.ok((await c.redis.pttl(record)) > 0);
    // Out of the registry: a plain beat does not add it back, the script that registers does.
    await c.redis.zrem(q.keys.workers, w.consumer);
    await until("back in the registry", async () => (await c.redis.zscore(q.keys.workers, w.consumer)) !== null,
      10_000);
  }));

test("plain beats follow the server's clock after it changed", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    const w = start(async () => null);
    // The tracked clock is private: reached here as a test may.
    const tracked = w as unknown as { clock?: { ms: number; at: number } };
    await until("beating in plain commands", async () => tracked.clock !== undefined);
    const aheadMs = async () => {
      const [secs, micros] = await c.redis.time();
      const score = Number(await c.redis.zscore(q.keys.workers, w.consumer));
      return score - (Number(secs) * 1000 + Math.floor(Number(micros) / 1000));
    };
    // As after a failover to a server whose clock is ten minutes behind the old one's, which ioredis hides: the
    // clock this worker tracks runs ahead of the server's, and one beat carries it (set again if a beat in flight
    // read the clock first).
    let carried = false;
    for (let i = 0; i < 5 && !carried; i++) {
      tracked.clock = { ms: tracked.clock!.ms + 600_000, at: tracked.clock!.at };
      carried = await until("a beat on the old clock", async () => (await aheadMs()) > 300_000, 2500)
        .then(() => true, () => false);
    }
    assert.ok(carried, "no beat carried the old clock");
    await until("beats on the server's clock again", async () => Math.abs(await aheadMs()) < 2000, 5000);
  }));

test("a handler past its time limit loses its slot", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    await q.enqueue("stuck", { id: "stuck", timeoutMs: 300, maxAttempts: 1 });
    const next = await q.enqueue("next");
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    start(async (job) => {
      if (job.payload === "stuck") await gate; // ignores job.signal
      return "done";
    }, { concurrency: 1, leaseMs: 1200 });
    await until("timed out and dead", async () => (await q.state("stuck")) === "dead", 10_000);
    assert.match((await q.job("stuck")).error ?? "", /^timeout:/);
    await until("the next job ran in the freed slot", async () => (await q.state(next)) === "completed", 10_000);
    release();
  }));

test("the queue's default limit applies to jobs without their own", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    await q.setDefaultTimeout(300);
    assert.equal(await c.redis.hget(q.keys.config, "timeout_ms"), "300");
    await q.enqueue("stuck", { id: "stuck", maxAttempts: 1 });
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    start(async () => {
      await gate; // ignores job.signal
      return "done";
    }, { concurrency: 1, leaseMs: 1200 });
    await until("timed out and dead", async () => (await q.state("stuck")) === "dead", 10_000);
    assert.match((await q.job("stuck")).error ?? "", /^timeout:/);
    release();
    await q.setDefaultTimeout();
    assert.equal(await c.redis.hget(q.keys.config, "timeout_ms"), null);
  }));

test("signals cancel a running job, pause the queue and stop the worker", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    await q.enqueue("long", { id: "long" });
    let started = false;
    const w = start(async (job) => {
      if (job.payload === "long") {
        started = true;
        await new Promise((_, reject) => job.signal.addEventListener("abort", () => reject(new Error("stopped"))));
      }
      return "ok";
    });
    await until("running", () => started);
    const k = q.keys;
    const send = async (kind: string, target: string) => {
      const { script } = await import("../src/scripts.js");
      await script("signal.lua").run(c.redis, [k.signals, k.outcomes, k.paused, k.ready, k.delayed, k.scheduled,
        k.index, target.startsWith("job:") ? k.job(target.slice(4)) : k.paused, k.parked, ...k.levelTail()],
      [kind, target, "test", Date.now(), "", 10_000, GROUP, 86_400_000]);
    };
    await send("cancel", "job:long");
    await until("cancelled", async () => (await q.state("long")) === "cancelled");
    await send("pause", "queue");
    await until("paused", async () => (await c.redis.hget(k.worker(w.consumer), "status")) === "paused", 5000);
    const waiting = await q.enqueue("later");
    await sleep(500);
    assert.equal(await q.state(waiting), "waiting");
    await send("resume", "queue");
    await until("resumed and run", async () => (await q.state(waiting)) === "completed");
    await send("stop", `worker:${w.consumer}`);
    await until("stopped", async () => (await c.redis.exists(k.worker(w.consumer))) === 0, 10_000);
  }));

test("priority levels are read in order; limits hold across two workers", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    await q.setPriorities(3);
    for (const level of [2, 1, 0, 2, 1, 0]) await q.enqueue({ level }, { priority: level });
    const order: number[] = [];
    const w = start<{ level: number }>(async (job) => void order.push(job.payload.level), { concurrency: 1 });
    await until("all ran", () => order.length === 6);
    assert.deepEqual(order, [0, 0, 1, 1, 2, 2]);
    await w.close();
    // At most 2 at once across the fleet, 1 per tenant.
    await q.setConcurrencyLimit(2);
    await q.setKeyLimit("x-t", { concurrency: 1 });
    assert.deepEqual(await c.redis.hgetall(q.keys.limit), { concurrency: "2", key_field: "x-t", key_concurrency: "1" });
    for (let i = 0; i < 6; i++) await q.enqueue({ i }, { headers: { "x-t": i < 4 ? "a" : "b" } });
    const runs: [string, number, number][] = [];
    const h = async (job: { header(n: string): string | undefined }) => {
      const s = performance.now();
      await sleep(100);
      runs.push([job.header("x-t") ?? "", s, performance.now()]);
    };
    start(h, { concurrency: 4 });
    start(h, { concurrency: 4 });
    await until("all six ran", () => runs.length === 6);
    const most = (rows: [string, number, number][]) => {
      const edges = rows.flatMap(([, s, e]) => [[s, 1], [e, -1]] as [number, number][]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      let now = 0, top = 0;
      for (const [, d] of edges) top = Math.max(top, (now += d));
      return top;
    };
    assert.equal(most(runs), 2);
    assert.equal(most(runs.filter((r) => r[0] === "a")), 1);
  }));

test("a worker cut off from Redis lets its jobs go before others may take them", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    await q.enqueue("long", { id: "long" });
    let started = 0;
    let givenUpAfter = -1;
    const w = start(async (job) => {
      started = performance.now();
      await new Promise<void>((res) => job.signal.addEventListener("abort", () => res()));
      givenUpAfter = performance.now() - started;
      return "late";
    }, { leaseMs: 30_000 });
    await until("running", () => started > 0);
    await sleep(300);
    // Redis answers nobody for 3.5 s: beats stop landing, and after 2/3 of crash_after (2 s) the worker gives its
    // job up, before anyone may adopt it (3 s).
    await c.redis.call("CLIENT", "PAUSE", 3500, "ALL");
    await until("given up", () => givenUpAfter >= 0, 10_000);
    assert.ok(givenUpAfter < 3000, String(givenUpAfter));
    await sleep(2000);
    assert.equal(w.completed, 0);
  }));

test("a paused job checkpoints, yields, is parked and resumes from its checkpoint", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    const id = await q.enqueue({ steps: 3 }, { id: "session" });
    let started = false;
    start(async (job) => {
      const cp = await job.resume();
      if (!cp) {
        await job.checkpoint({ step: 1 });
        started = true;
        await new Promise<void>((res) => job.stopping.addEventListener("abort", () => res()));
        throw new Interrupted();
      }
      return { resumedAt: (cp.state as { step: number }).step, attempt: job.attempt };
    });
    await until("running", () => started);
    const k = q.keys;
    const { script } = await import("../src/scripts.js");
    const send = (kind: string) => script("signal.lua").run(c.redis, [k.signals, k.outcomes, k.paused, k.ready,
      k.delayed, k.scheduled, k.index, k.job(id), k.parked, ...k.levelTail()],
    [kind, `job:${id}`, "test", Date.now(), "", 10_000, GROUP, 86_400_000]);
    await send("pause");
    await until("parked", async () => (await q.state(id)) === "parked");
    await send("resume");
    await until("resumed and done", async () => (await q.state(id)) === "completed");
    assert.deepEqual(await q.result(id), { resumedAt: 1, attempt: 1 });
  }));

test("waiting for a result needs no polling", () =>
  withWorkers(async (c, start) => {
    const q = c.queue("jobs");
    const ok = await q.enqueue({ n: 2 }, { id: "ok" });
    const bad = await q.enqueue({ n: -1 }, { id: "bad" });
    const later = await q.enqueue({ n: 1 }, { id: "later", delayMs: 60_000 });
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    start<{ n: number }>(async (job) => {
      await gate;
      if (job.payload.n < 0) throw new Permanent("negative");
      return job.payload.n * 10;
    });
    const waits = Promise.all([q.wait(ok, 10_000), q.wait(bad, 10_000)]);
    await sleep(300);
    const t0 = Date.now();
    release();
    const [a, b] = await waits;
    assert.ok(Date.now() - t0 < 3000, "ended by the events, before the 5 s recheck");
    assert.equal(a.state, "completed");
    assert.equal(await q.result(ok), 20);
    assert.equal(b.state, "dead");
    assert.match(b.error ?? "", /negative/);
    const t1 = Date.now();
    assert.equal((await q.wait(later, 500)).state, "delayed");
    assert.ok(Date.now() - t1 < 2000);
    assert.equal((await q.wait("no-such-job", 5000)).state, "unknown");
  }));
