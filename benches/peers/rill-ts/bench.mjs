// rill's TypeScript package on the same Redis as BullMQ's bench (../bullmq): bulk enqueue, then one worker drains
// the jobs. Prints one JSON document shaped like ../bullmq/bench.mjs and `rill bench --json`.
//
//   (cd ../../../clients/typescript && npm install && npx tsc -p .) && node bench.mjs [--redis URL] [--jobs N] [--concurrency C]
//
// Method: the same as ../bullmq/bench.mjs: 100-byte payloads ({ i, payload }), default options (results kept 24 h,
// completed events), one Worker in this process with an empty handler. Redis CPU is the server's own (INFO cpu,
// user + sys) over the phase; client CPU is this process's. Keys live under the namespace `rillpeer` and are
// removed at the end.
import { Client, Worker } from "../../../clients/typescript/dist/src/index.js";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const url = arg("redis", process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const jobs = Number(arg("jobs", "100000"));
const concurrency = Number(arg("concurrency", "64"));
const name = `bench-${process.pid}`;

const client = new Client(url, { namespace: "rillpeer" });
const admin = client.redis;
async function redisCpu() {
  const info = await admin.info("cpu");
  const get = (k) => Number(info.match(new RegExp(`^${k}:([0-9.]+)`, "m"))[1]);
  return get("used_cpu_sys") + get("used_cpu_user");
}
function ownCpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}
async function phase(run) {
  const [r0, c0, t0] = [await redisCpu(), ownCpu(), process.hrtime.bigint()];
  await run();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const [r1, c1] = [await redisCpu(), ownCpu()];
  return {
    jobs_per_s: Math.round(jobs / secs),
    redis_cpu_us_per_job: Math.round(((r1 - r0) * 1e6 * 100) / jobs) / 100,
    client_cpu_us_per_job: Math.round(((c1 - c0) * 1e6 * 100) / jobs) / 100,
  };
}

const queue = client.queue(name);
const payload = "x".repeat(100);
const cases = [];

cases.push({
  case: "enqueue", concurrency: 1,
  ...(await phase(async () => {
    const chunk = 1000;
    for (let i = 0; i < jobs; i += chunk) {
      const n = Math.min(chunk, jobs - i);
      await queue.enqueueMany(Array.from({ length: n }, (_, k) => ({ i: i + k, payload })), chunk);
    }
  })),
});

cases.push({
  case: "drain", concurrency,
  ...(await phase(async () => {
    const worker = new Worker(client, name, async () => {}, { concurrency });
    const done = worker.run();
    while (worker.completed < jobs) await new Promise((res) => setTimeout(res, 1));
    await worker.close();
    await done;
  })),
});

let cursor = "0";
do {
  const [next, keys] = await admin.scan(cursor, "MATCH", `rillpeer:{${name}}:*`, "COUNT", 1000);
  if (keys.length) await admin.unlink(...keys);
  cursor = next;
} while (cursor !== "0");
await admin.srem("rillpeer:queues", name);
await client.close();
console.log(JSON.stringify({ system: "rill-queue (TypeScript)", version: "0.1.0", redis: url, jobs, cases }, null, 2));
