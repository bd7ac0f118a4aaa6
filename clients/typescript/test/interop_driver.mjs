// Drives the built package for tests/interop.rs (a Rust worker on the other side):
//   node interop_driver.mjs URL NAMESPACE QUEUE produce        prints one job id per line
//   node interop_driver.mjs URL NAMESPACE QUEUE inspect ID...  prints one JSON line per id: state, result
//   node interop_driver.mjs URL NAMESPACE QUEUE work N [SLEEP_MS]  works until N jobs completed, prints "completed N";
//                                                    the handler returns {by: "typescript", n: payload.n, attempt}
//   node interop_driver.mjs URL NAMESPACE QUEUE hold LEASE_MS     works one job whose handler takes 3 s, then prints
//                                                    JSON: the ids it returned for, completions, lease failures
//   node interop_driver.mjs URL NAMESPACE QUEUE serve MS       works (and fires schedules) for MS, prints "completed N"
//   node interop_driver.mjs URL NAMESPACE QUEUE fire-times JSON   JSON: [[expr, tz, after_ms, n], ...]; prints the n
//                                                    fire times after after_ms of each, as a JSON list
//   node interop_driver.mjs URL NAMESPACE QUEUE add-schedule NAME (cron EXPR TZ | every MS)   adds it (payload NAME)
import { Client, Schedule, Worker } from "../dist/src/index.js";

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

const [url, namespace, queue, cmd, ...rest] = process.argv.slice(2);
const client = new Client(url, { namespace });
const q = client.queue(queue);
try {
  if (cmd === "produce") {
    const ids = [
      await q.enqueue({ to: "plain@example.com", n: 0 }),
      await q.enqueue({ to: "named@example.com", n: 1 }, { id: "ts-named", maxAttempts: 2 }),
      await q.enqueue({ to: "tenant@example.com", n: 2 }, { dedupKey: "ts-dedup", headers: { "x-tenant": "acme" } }),
      await q.enqueue({ to: "later@example.com", n: 3 }, { delayMs: 300, timeoutMs: 30_000 }),
    ];
    const dup = await q.enqueueOutcome({ to: "again@example.com", n: 9 }, { id: "ts-named" });
    if (!dup.duplicate || dup.id !== "ts-named") throw new Error(`not a duplicate: ${JSON.stringify(dup)}`);
    console.log(ids.join("\n"));
  } else if (cmd === "inspect") {
    for (const id of rest) {
      const info = await q.job(id);
      const result = info.result ? await q.result(id) : null;
      console.log(JSON.stringify({ id, state: info.state, result, attempts: info.attempts }));
    }
  } else if (cmd === "fire-times") {
    const out = JSON.parse(rest[0]).map(([expr, tz, after, n]) => {
      const s = Schedule.cron(expr, { tz });
      const got = [];
      for (let t = after; got.length < n;) got.push((t = s.nextAfter(t)));
      return got;
    });
    console.log(JSON.stringify(out));
  } else if (cmd === "add-schedule") {
    const [name, kind, a, b] = rest;
    await q.schedule(name, kind === "cron" ? Schedule.cron(a, { tz: b }) : Schedule.every(Number(a)), name);
  } else if (cmd === "serve") {
    const w = new Worker(client, queue, async () => {}, { concurrency: 4, blockMs: 200 });
    const done = w.run();
    await sleep(Number(rest[0]));
    await w.close();
    await done;
    console.log(`completed ${w.completed}`);
  } else if (cmd === "work" || cmd === "hold") {
    const n = cmd === "work" ? Number(rest[0]) : 1;
    const pause = cmd === "work" ? Number(rest[1] ?? 0) : 3000;
    const returned = [];
    const w = new Worker(client, queue, async (job) => {
      await sleep(pause);
      returned.push(job.id);
      return { by: "typescript", n: job.payload.n, attempt: job.attempt };
    }, { concurrency: 4, blockMs: 200, leaseMs: cmd === "hold" ? Number(rest[0]) : 5000 });
    const done = w.run();
    console.log("started");
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && (cmd === "work" ? w.completed < n : returned.length === 0)) await sleep(20);
    if (cmd === "hold") await sleep(500);
    await w.close();
    await done;
    if (cmd === "work") console.log(`completed ${w.completed}`);
    else console.log(JSON.stringify({ returned, completed: w.completed, lease_failures: w.leaseFailures }));
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
} finally {
  await client.close();
}
