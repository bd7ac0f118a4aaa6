/** The Lua scripts this package ships (copies of the repository's `lua/`; the tests fail if they differ), called
 * by SHA with a fallback to EVAL. */

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";

/** Where the shipped scripts are: `lua/` beside `dist/`. */
export const LUA_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "lua");

type Arg = string | number | Buffer;

export class Script {
  readonly sha: string;
  constructor(readonly name: string, readonly source: string) {
    this.sha = createHash("sha1").update(source).digest("hex");
  }

  /** Runs the script; replies keep their bytes (`evalshaBuffer`) so payloads and results stay exact. */
  async run(redis: Redis, keys: string[], args: Arg[]): Promise<unknown> {
    try {
      return await redis.callBuffer("EVALSHA", this.sha, keys.length, ...keys, ...args);
    } catch (e) {
      if (!(e instanceof Error) || !e.message.startsWith("NOSCRIPT")) throw e;
      return await redis.callBuffer("EVAL", this.source, keys.length, ...keys, ...args);
    }
  }
}

const cache = new Map<string, Script>();

/** The shipped script `name` (`enqueue.lua`, ...). */
export function script(name: string): Script {
  let s = cache.get(name);
  if (!s) {
    s = new Script(name, readFileSync(join(LUA_DIR, name), "utf8"));
    cache.set(name, s);
  }
  return s;
}

/** A flat field list (`[name, value, ...]`) as an object of text values. */
export function fields(flat: unknown[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[text(flat[i])] = text(flat[i + 1]);
  return out;
}

/** A reply's bytes as text. */
export function text(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (Buffer.isBuffer(v)) return v.toString("utf8");
  return String(v);
}
