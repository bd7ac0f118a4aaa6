/** Partitioned queues (SPEC.md section 2a): routing as every rill client routes, and the queue seen as one. */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Client, Partitioned, Partitions, ProtocolError, Worker, fnv1a32 } from "../src/index.js";
import { RedisServer, namespace } from "./support.js";

let server: RedisServer;
before(async () => {
  server = await RedisServer.start();
});
after(() => server.stop());

test("FNV-1a matches the published vectors", () => {
  assert.equal(fnv1a32(Buffer.from("")), 0x811c9dc5);
  assert.equal(fnv1a32(Buffer.from("a")), 0xe40c292c);
  assert.equal(fnv1a32(Buffer.from("foobar")), 0xbf9cf968);
});

test("stored partitions are checked and generated ids route where asked", () => {
  assert.equal(Partitions.fromConfig("q", null, null), undefined);
  assert.equal(Partitions.fromConfig("q", "1", null), undefined);
  assert.deepEqual(Partitions.fromConfig("q", "2", "q q~1.77")?.tags, ["q", "q~1.77"]);
  for (const [count, tags] of [["x", null], ["2", "q"], ["2", "q q~2"], ["2", "p q~1"], ["2", "q q~1.x"]] as const) {
    assert.throws(() => Partitions.fromConfig("q", count, tags), ProtocolError);
  }
  const p = new Partitions(["q", "q~1", "q~2"]);
  for (let i = 0; i < 30; i++) {
    const id = p.idIn(i, 1_700_000_000_000);
    assert.ok(id.startsWith("~1700000000000."));
    assert.equal(p.ofKey(id), i % 3);
  }
});

test("jobs spread, route by id and dedup key, and are found as one queue; the worker refuses", async () => {
  const c = new Client(server.url, { namespace: namespace() });
  try {
    const q = c.queue("parts");
    await c.redis.hset(q.keys.config, { partitions: 3, partition_tags: "parts parts~1 parts~2.9" });
    const ids: string[] = [];
    for (let n = 0; n < 30; n++) ids.push(await q.enqueue({ n }));
    for (const tag of ["parts", "parts~1", "parts~2.9"]) {
      assert.equal(await c.redis.xlen(`${c.namespace}:{${tag}}:ready`), 10, tag);
    }
    const parts = (await c.partitions(q.keys)) as Partitions;
    await q.enqueue({ n: 1 }, { id: "invoice-7" });
    const home = parts.tags[parts.ofKey("invoice-7")];
    assert.ok(await c.redis.hexists(`${c.namespace}:{${home}}:index`, "invoice-7"));
    const first = await q.enqueueOutcome({ n: 2 }, { dedupKey: "user-1" });
    const again = await q.enqueueOutcome({ n: 3 }, { dedupKey: "user-1" });
    assert.ok(again.duplicate);
    assert.equal(again.id, first.id);
    for (const id of [...ids, "invoice-7", first.id]) assert.equal(await q.state(id), "waiting", id);
    assert.equal((await q.counts()).waiting, 32);
    const w = new Worker(c, "parts", async () => undefined);
    await assert.rejects(w.run(), Partitioned);
  } finally {
    await c.close();
  }
});
