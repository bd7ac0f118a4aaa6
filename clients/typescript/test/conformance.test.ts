/** The shared conformance vectors (tests/vectors/) and the shipped scripts: this package builds the same key
 * names, refuses the same names and ids, reads the same CBOR, and its copies of the scripts are the repository's
 * and give every reply and state the vectors list. */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Client, DEFAULT_MAX_PAYLOAD, InvalidJobId, InvalidName, QueueKeys, decode, encode } from "../src/index.js";
import { Refused, decodePayload, parseEntry } from "../src/job.js";
import { LUA_DIR, script } from "../src/scripts.js";
import { REPO, RedisServer, namespace } from "./support.js";

const VECTORS = join(REPO, "tests", "vectors");
const load = (name: string) => JSON.parse(readFileSync(join(VECTORS, name), "utf8"));

let server: RedisServer;
before(async () => {
  server = await RedisServer.start();
});
after(() => server.stop());

function resolver(k: QueueKeys): (name: string) => string {
  return (name) => {
    const sp = name.indexOf(" ");
    if (sp >= 0) {
      const kind = name.slice(0, sp);
      const rest = name.slice(sp + 1);
      switch (kind) {
        case "job": return k.job(rest);
        case "checkpoints": return k.checkpoints(rest);
        case "dedup": return k.dedup(rest);
        case "worker": return k.worker(rest);
        case "schedule": return k.schedule(rest);
        case "level": return k.level(Number(rest));
      }
      throw new Error(`no key kind ${kind}`);
    }
    const v = (k as unknown as Record<string, unknown>)[name];
    if (typeof v !== "string") throw new Error(`no key named ${name}`);
    return v;
  };
}

test("the shipped scripts are the repository's", () => {
  const names = readdirSync(join(REPO, "lua")).filter((f) => f.endsWith(".lua")).sort();
  assert.deepEqual(readdirSync(LUA_DIR).filter((f) => f.endsWith(".lua")).sort(), names);
  for (const n of names) {
    assert.equal(readFileSync(join(LUA_DIR, n), "utf8"), readFileSync(join(REPO, "lua", n), "utf8"),
      `clients/typescript/lua/${n} differs from lua/${n}: copy it`);
  }
});

test("key names, refused names and job ids", async () => {
  const v = load("keys.json");
  for (const q of v.queues) {
    const key = resolver(new QueueKeys(q.namespace, q.queue));
    for (const section of ["keys", "per_name"]) {
      for (const [name, want] of Object.entries(q[section])) assert.equal(key(name), want, name);
    }
  }
  for (const r of v.refused_names) assert.throws(() => new QueueKeys("ns", r.name), InvalidName, r.why);
  const client = new Client(server.url, { namespace: namespace() });
  try {
    const q = client.queue("q");
    for (const r of v.refused_job_ids) await assert.rejects(q.enqueue(1, { id: r.id }), InvalidJobId, r.why);
    for (const id of v.accepted_job_ids) assert.equal(await q.enqueue(1, { id }), id);
  } finally {
    await client.close();
  }
});

test("CBOR payloads", () => {
  const v = load("payloads.json");
  for (const c of [...v.payloads, ...v.other_encodings]) {
    assert.deepEqual(decode(Buffer.from(c.cbor_hex, "hex")), c.json, c.note);
    assert.deepEqual(decode(encode(c.json)), c.json, c.note);
  }
  assert.throws(() => decode(Buffer.from("0100", "hex")));
});

function arg(key: (n: string) => string, s: string): Buffer {
  if (s.startsWith("hex:")) return Buffer.from(s.slice(4), "hex");
  if (s.startsWith("{") && s.endsWith("}")) return Buffer.from(key(s.slice(1, -1)));
  return Buffer.from(s);
}

function json(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === "number" || typeof v === "string") return v;
  if (Buffer.isBuffer(v)) {
    const s = v.toString("utf8");
    return Buffer.from(s, "utf8").equals(v) ? s : "hex:" + v.toString("hex");
  }
  if (Array.isArray(v)) return v.map(json);
  throw new Error(`unexpected reply ${String(v)}`);
}

function matches(key: (n: string) => string, want: unknown, got: unknown): boolean {
  if (want === "<any>") return true;
  if (want === "<id>") return typeof got === "string" && /^\d+-\d+$/.test(got);
  if (typeof want === "string" && typeof got === "string")
    return want === got || (want.startsWith("{") && arg(key, want).equals(Buffer.from(got)));
  if (Array.isArray(want) && Array.isArray(got))
    return want.length === got.length && want.every((w, i) => matches(key, w, got[i]));
  return JSON.stringify(want) === JSON.stringify(got);
}

async function call(client: Client, key: (n: string) => string, words: string[]): Promise<unknown> {
  const [command, ...rest] = words;
  return await client.redis.callBuffer(command, ...rest.map((w) => arg(key, w)));
}

test("script calls", async () => {
  const cases = load("scripts.json").cases;
  assert.ok(cases.length >= 15);
  const client = new Client(server.url, { namespace: namespace() });
  try {
    for (const [i, c] of cases.entries()) {
      const name = `${c.script} (${c.note})`;
      const key = resolver(new QueueKeys(client.namespace, `v${i}`));
      for (const words of c.seed) await call(client, key, words);
      const got = json(await script(c.script).run(client.redis, c.keys.map((w: string) => arg(key, w).toString()),
        c.argv.map((w: string) => arg(key, w))));
      assert.ok(matches(key, c.reply, got), `${name}: replied ${JSON.stringify(got)}, not ${JSON.stringify(c.reply)}`);
      for (const [cmd, want] of c.state) {
        const g = json(await call(client, key, cmd));
        assert.ok(matches(key, want, g), `${name}: ${cmd} gave ${JSON.stringify(g)}, not ${JSON.stringify(want)}`);
      }
    }
  } finally {
    await client.close();
  }
});

/** The vectors' job type, as the Rust tests declare it: `struct Email { to: String, n: u32 }`. */
function email(v: unknown): unknown {
  const o = v as Record<string, unknown>;
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Map || typeof o.to !== "string")
    throw new Error("expected a map with text `to`");
  if (typeof o.n !== "number" || !Number.isInteger(o.n) || o.n < 0 || o.n >= 2 ** 32)
    throw new Error("expected an unsigned 32-bit `n`");
  return v;
}

function bytes(s: string): Buffer {
  if (s.startsWith("hex:")) return Buffer.from(s.slice(4), "hex");
  if (s.startsWith("repeat:")) {
    const [, n, hh] = s.split(":");
    return Buffer.alloc(Number(n), Buffer.from(hh, "hex"));
  }
  return Buffer.from(s);
}

test("refused entries: each with its dead-letter reason and message", () => {
  const cases = readFileSync(join(VECTORS, "entries-refused.jsonl"), "utf8").split("\n").filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  assert.ok(cases.length >= 50);
  for (const c of cases) {
    const fields = c.fields.map(([k, v]: [string, string]) => [bytes(k), bytes(v)]) as [Buffer, Buffer][];
    assert.throws(() => {
      const env = parseEntry("1700000000000-0", fields, DEFAULT_MAX_PAYLOAD);
      decodePayload(env, email);
    }, (e: unknown) => {
      assert.ok(e instanceof Refused, `${c.note}: ${e}`);
      assert.equal(e.reason, c.reason, c.note);
      assert.ok(e.message.includes(c.expect), `${c.note}: ${e.message} lacks ${c.expect}`);
      return true;
    }, c.note);
  }
});
