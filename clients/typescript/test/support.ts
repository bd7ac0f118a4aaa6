/** A private redis-server for a test file (free port, temp dir, killed at the end): tests never touch a shared
 * Redis. `RILL_TEST_REDIS_SERVER` picks the binary (default: redis-server on PATH). */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";

/** The repository root, when the package is tested in place (its `lua/` and `tests/vectors/`). */
export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

export class RedisServer {
  private constructor(readonly port: number, readonly dir: string, readonly proc: ChildProcess) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<RedisServer> {
    const binary = process.env.RILL_TEST_REDIS_SERVER ?? "redis-server";
    const dir = mkdtempSync(join(tmpdir(), "rill-ts-"));
    const port = await freePort();
    const proc = spawn(binary, ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "",
      "--appendonly", "no"], { stdio: "ignore" });
    const server = new RedisServer(port, dir, proc);
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = new Redis(port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      try {
        await r.connect();
        await r.ping();
        r.disconnect();
        return server;
      } catch (e) {
        r.disconnect();
        if (Date.now() > deadline) throw e;
        await new Promise((res) => setTimeout(res, 20));
      }
    }
  }

  stop(): void {
    this.proc.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A namespace of its own for each test. */
export function namespace(): string {
  return "t" + randomBytes(6).toString("hex");
}

export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error(`timed out waiting for: ${what}`);
}
