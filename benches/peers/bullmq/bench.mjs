// BullMQ on the same Redis as `rill bench`: bulk enqueue, then one worker drains the jobs. Prints one JSON
// document shaped like `rill bench --json` (cases[] with case, jobs_per_s, redis_cpu_us_per_job,
// client_cpu_us_per_job, concurrency), so the two can be read side by side.
//
//   npm ci && node bench.mjs [--redis URL] [--jobs N] [--concurrency C]
//
// Method: 100-byte payloads, BullMQ's default job options (completed jobs are kept), one Worker in this
// process. Redis CPU is the server's own (INFO cpu, user + sys) over the phase; client CPU is this process's.
// Keys live under the prefix `rillpeer` and are removed at the end.
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const url = arg("redis", process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const jobs = Number(arg("jobs", "100000"));
const concurrency = Number(arg("concurrency", "64"));
const prefix = "rillpeer";
const name = `bench-${process.pid}`;

const admin = new IORedis(url, { maxRetriesPerRequest: null });
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

const connection = new IORedis(url, { maxRetriesPerRequest: null });
const queue = new Queue(name, { connection, prefix });
const payload = "x".repeat(100);
const cases = [];

const enqueue = await phase(async () => {
  const chunk = 1000;
  for (let i = 0; i < jobs; i += chunk) {
    const n = Math.min(chunk, jobs - i);
    await queue.addBulk(Array.from({ length: n }, (_, k) => ({ name: "job", data: { i: i + k, payload } })));
  }
});
cases.push({ case: "enqueue", concurrency: 1, ...enqueue });

const workerConnection = new IORedis(url, { maxRetriesPerRequest: null });
const drain = await phase(
  () =>
    new Promise((resolve) => {
      let done = 0;
      const worker = new Worker(name, async () => {}, {
        connection: workerConnection,
        prefix,
        concurrency,
      });
      worker.on("completed", () => {
        done += 1;
        if (done === jobs) worker.close().then(resolve);
      });
    }),
);
cases.push({ case: "drain", concurrency, ...drain });

await queue.obliterate({ force: true });
await queue.close();
await connection.quit();
await workerConnection.quit();
await admin.quit();
console.log(JSON.stringify({ system: "bullmq", version: (await import("bullmq/package.json", { with: { type: "json" } })).default.version, redis: url, jobs, cases }, null, 2));
