/** Producing and looking, against a private Redis: plain jobs are one XADD whose entry id is the job id; ids and
 * dedup keys follow SPEC.md's one dedup rule; delays, priorities and headers land where SPEC.md says; bad input is
 * refused with a typed error before anything is written. */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  Client, InvalidJobId, InvalidName, InvalidOption, NoSuchPriority, PayloadTooLarge, GROUP, decode,
} from "../src/index.js";
import { RedisServer, namespace } from "./support.js";

let server: RedisServer;
before(async () => {
  server = await RedisServer.start();
});
after(() => server.stop());

async function withClient(f: (c: Client) => Promise<void>, options = {}): Promise<void> {
  const c = new Client(server.url, { namespace: namespace(), ...options });
  try {
    await f(c);
  } finally {
    await c.close();
  }
}

test("a plain job is one entry whose id is the job id", () =>
  withClient(async (c) => {
    const q = c.queue("emails");
    const id = await q.enqueue({ to: "ada@example.com" }, { maxAttempts: 3, timeoutMs: 2500, headers: { "x-tenant": "acme" } });
    const entries = await c.redis.xrangeBuffer(q.keys.ready, "-", "+");
    assert.equal(entries.length, 1);
    assert.equal(entries[0][0].toString(), id);
    const f = entries[0][1];
    const field = (name: string) => f[f.findIndex((x) => x.toString() === name) + 1];
    assert.equal(field("v").toString(), "1");
    assert.deepEqual(decode(field("payload")), { to: "ada@example.com" });
    assert.equal(field("max_attempts").toString(), "3");
    assert.equal(field("timeout_ms").toString(), "2500");
    assert.equal(field("x-tenant").toString(), "acme");
    assert.deepEqual(await c.redis.smembers(q.keys.queues), ["emails"]);
    assert.equal(await q.state(id), "waiting");
    assert.equal((await q.counts()).waiting, 1);
  }));

test("an id or a dedup key refuses a second job", () =>
  withClient(async (c) => {
    const q = c.queue("orders");
    assert.deepEqual(await q.enqueueOutcome({ n: 1 }, { id: "order-42" }), { id: "order-42", duplicate: false });
    assert.deepEqual(await q.enqueueOutcome({ n: 2 }, { id: "order-42" }), { id: "order-42", duplicate: true });
    const a = await q.enqueue({ n: 3 }, { dedupKey: "invoice-7" });
    assert.equal(a.length, 32);
    assert.deepEqual(await q.enqueueOutcome({ n: 4 }, { dedupKey: "invoice-7" }), { id: a, duplicate: true });
    assert.equal(await c.redis.xlen(q.keys.ready), 2);
    await q.enqueue(1, { id: "short", dedupTtlMs: 1500 });
    const ttl = await c.redis.pttl(q.keys.dedup("short"));
    assert.ok(ttl > 0 && ttl <= 1500, String(ttl));
  }));

test("delayed jobs wait in the delayed set", () =>
  withClient(async (c) => {
    const q = c.queue("later");
    const id = await q.enqueue("x", { delay: 60_000 }); // BullMQ's name, ms
    assert.equal(await q.state(id), "delayed");
    const due = Number(await c.redis.zscore(q.keys.delayed, id));
    assert.ok(Math.abs(due - (Date.now() + 60_000)) < 5000);
    const at = await q.enqueue("y", { runAt: new Date(Date.now() + 3_600_000) });
    assert.ok(Math.abs(Number(await c.redis.zscore(q.keys.delayed, at)) - (Date.now() + 3_600_000)) < 5000);
    assert.equal((await q.counts()).delayed, 2);
  }));

test("priority levels route to their stream and are checked", () =>
  withClient(async (c) => {
    const q = c.queue("prio");
    await assert.rejects(q.enqueue("x", { priority: 2 }), (e: unknown) => e instanceof NoSuchPriority && e.levels === 1);
    await c.redis.hset(q.keys.priorities, "levels", 3);
    await c.redis.xgroup("CREATE", q.keys.level(2), GROUP, "0", "MKSTREAM");
    const id = await q.enqueue("x", { priority: 2 });
    const [entry, level] = id.split("@");
    assert.equal(level, "2");
    assert.deepEqual((await c.redis.xrange(q.keys.level(2), "-", "+")).map((e) => e[0]), [entry]);
    const info = await q.job(id);
    assert.deepEqual([info.state, info.level], ["waiting", 2]);
  }));

test("bad input is refused before anything is written", () =>
  withClient(async (c) => {
    const q = c.queue("strict");
    for (const bad of [{ id: "" }, { id: "a b" }, { id: "x".repeat(257) }]) {
      await assert.rejects(q.enqueue(1, bad), InvalidJobId);
    }
    for (const bad of [{ maxAttempts: 0 }, { maxAttempts: 1_000_001 }, { priority: 16 }, { timeoutMs: 0 },
      { delayMs: -1 }, { headers: { tenant: "a" } }]) {
      await assert.rejects(q.enqueue(1, bad), InvalidOption, JSON.stringify(bad));
    }
    const small = new Client(server.url, { namespace: c.namespace, maxPayload: 16 });
    await assert.rejects(small.queue("strict").enqueue("x".repeat(100)), PayloadTooLarge);
    await small.close();
    assert.throws(() => c.queue("a:b"), InvalidName);
    assert.equal(await c.redis.exists(q.keys.ready, q.keys.delayed), 0);
  }));

test("enqueueMany pipelines plain jobs in order; unknown jobs", () =>
  withClient(async (c) => {
    const q = c.queue("bulk");
    const ids = await q.enqueueMany(Array.from({ length: 2500 }, (_, i) => ({ n: i })), 1000);
    assert.equal(ids.length, 2500);
    assert.deepEqual((await c.redis.xrange(q.keys.ready, "-", "+", "COUNT", 3)).map((e) => e[0]), ids.slice(0, 3));
    assert.equal(await q.state("no-such-job"), "unknown");
    assert.equal(await q.result("no-such-job"), undefined);
  }));
