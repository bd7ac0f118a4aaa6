// Drives the built package for tests/interop.rs (a Rust worker on the other side):
//   node interop_driver.mjs URL NAMESPACE QUEUE produce        prints one job id per line
//   node interop_driver.mjs URL NAMESPACE QUEUE inspect ID...  prints one JSON line per id: state, result
import { Client } from "../dist/src/index.js";

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
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
} finally {
  await client.close();
}
