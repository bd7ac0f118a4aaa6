/** A job as a worker sees it, and the checks an entry must pass first (SPEC.md section 3): a refused entry is
 * dead-lettered with its reason, never run and never dropped. */

import { isUtf8 } from "node:buffer";
import { InvalidJobId } from "./errors.js";
import { LEVELS, validateJobId } from "./keys.js";
import { decodeFirst } from "./wire.js";

const MAX_ATTEMPTS = 1_000_000;
const MAX_TIMEOUT_MS = 366 * 24 * 3600 * 1000;
const MAX_ENQUEUED_MS = 16_725_225_600_000; // year ~2500: anything later is a unit mistake
const KNOWN = new Set(["v", "payload", "id", "attempts", "max_attempts", "timeout_ms", "priority", "enqueued_ms",
  "last_error"]);

/** An entry that breaks SPEC.md section 3: `reason` is the dead-letter reason (`malformed` or `too_large`). */
export class Refused extends Error {
  constructor(readonly reason: "malformed" | "too_large", message: string) {
    super(message);
    this.name = "Refused";
  }
}

/** An entry that passed the checks (its payload not yet decoded). */
export interface Envelope {
  entryId: string;
  jobId: string;
  payload: Buffer;
  attempts: number;
  maxAttempts?: number;
  timeoutMs?: number;
  priority: number;
  enqueuedMs: number;
  lastError?: string;
  headers: Record<string, Buffer>;
}

const utf8 = (name: string, v: Buffer): string => {
  if (!isUtf8(v)) throw new Refused("malformed", `field \`${name}\` is not valid UTF-8`);
  return v.toString("utf8");
};

function decimal(name: string, v: Buffer, most: number): number {
  const s = utf8(name, v);
  if (s.length === 0 || s.length > 20 || !/^[0-9]+$/.test(s))
    throw new Refused("malformed", `field \`${name}\` must be a non-negative decimal integer, got ${JSON.stringify(s.slice(0, 40))}`);
  const n = Number(s);
  if (!(n <= most) || BigInt(s) > BigInt(most))
    throw new Refused("malformed", `field \`${name}\` is out of range (max ${most}), got ${JSON.stringify(s.slice(0, 40))}`);
  return n;
}

/** The job id an entry names in exactly one valid `id` field, else its entry id (with `suffix`, `@<p>` on the
 * stream of level p) (SPEC.md section 5). */
export function jobIdOf(entryId: string, fields: [Buffer, Buffer][], suffix = ""): string {
  const ids = fields.filter(([k]) => k.toString() === "id");
  if (ids.length === 1) {
    try {
      const id = utf8("id", ids[0][1]);
      validateJobId(id);
      return id;
    } catch {
      // not a valid id: the entry id names it
    }
  }
  return entryId + suffix;
}

/** Checks a raw entry (its field list as Redis gave it: a field may appear twice) against SPEC.md v1. */
export function parseEntry(entryId: string, fields: [Buffer, Buffer][] | null, maxPayload: number, suffix = ""): Envelope {
  if (!fields) throw new Refused("malformed", "entry was deleted while pending");
  const seen = new Map<string, Buffer>();
  const headers: Record<string, Buffer> = {};
  for (const [k, v] of fields) {
    if (!isUtf8(k)) throw new Refused("malformed", "a field name is not valid UTF-8");
    const name = k.toString("utf8");
    if (name.startsWith("x-")) {
      headers[name] = v;
      continue;
    }
    if (!KNOWN.has(name))
      throw new Refused("malformed", `unknown field ${JSON.stringify(name.slice(0, 64))} (format v1 allows only the SPEC.md fields and \`x-\` extensions)`);
    if (seen.has(name)) throw new Refused("malformed", `field \`${name}\` appears twice`);
    seen.set(name, v);
  }
  const v = seen.get("v");
  if (!v) throw new Refused("malformed", "missing field `v` (format version)");
  const version = utf8("v", v);
  if (version !== "1")
    throw new Refused("malformed", `unsupported format version ${JSON.stringify(version.slice(0, 20))} (this worker reads version 1)`);
  const payload = seen.get("payload");
  if (!payload) throw new Refused("malformed", "missing field `payload`");
  if (payload.length > maxPayload)
    throw new Refused("too_large", `payload of ${payload.length} bytes exceeds the limit of ${maxPayload} bytes`);
  if (payload.length === 0) throw new Refused("malformed", "field `payload` is empty (not CBOR)");
  let jobId = entryId + suffix;
  const id = seen.get("id");
  if (id) {
    jobId = utf8("id", id);
    try {
      validateJobId(jobId);
    } catch (e) {
      if (e instanceof InvalidJobId) throw new Refused("malformed", `field \`id\`: ${e.message}`);
      throw e;
    }
  }
  const num = (name: string, most: number) => {
    const raw = seen.get(name);
    return raw === undefined ? undefined : decimal(name, raw, most);
  };
  const attempts = num("attempts", MAX_ATTEMPTS) ?? 0;
  const maxAttempts = num("max_attempts", MAX_ATTEMPTS);
  if (maxAttempts === 0) throw new Refused("malformed", "field `max_attempts` must be at least 1");
  const timeoutMs = num("timeout_ms", MAX_TIMEOUT_MS);
  if (timeoutMs === 0) throw new Refused("malformed", "field `timeout_ms` must be at least 1");
  const priority = num("priority", LEVELS - 1) ?? 0;
  const enqueuedMs = num("enqueued_ms", MAX_ENQUEUED_MS) ?? Number(entryId.split("-")[0]);
  const lastError = seen.get("last_error")?.toString("utf8");
  return { entryId, jobId, payload, attempts, maxAttempts, timeoutMs, priority, enqueuedMs, lastError, headers };
}

/** The payload as one CBOR value (`check` may then refuse or convert it); bytes after that value refuse it. */
export function decodePayload(env: Envelope, check?: (value: unknown) => unknown): unknown {
  let first: { value: unknown; trailing: boolean };
  try {
    first = decodeFirst(env.payload);
  } catch (e) {
    throw new Refused("malformed", `payload does not decode: ${e instanceof Error ? e.message : e}`);
  }
  let value = first.value;
  if (check) {
    try {
      value = check(value);
    } catch (e) {
      throw new Refused("malformed", `payload does not decode as the job type: ${e instanceof Error ? e.message : e}`);
    }
  }
  if (first.trailing) throw new Refused("malformed", "trailing bytes after the CBOR value");
  return value;
}

/** A saved checkpoint of a job (SPEC.md section 6a). */
export interface Checkpoint {
  version: number;
  state: unknown;
  label: string;
  ms: number;
}

/** What a handler gets. `signal` aborts when the job is cancelled, its lease is lost, it times out or the worker
 * stops: a long handler should watch it and return early. */
export interface Job<T = unknown> {
  readonly id: string;
  readonly entryId: string;
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly payload: T;
  readonly headers: Record<string, Buffer>;
  readonly lastError?: string;
  readonly signal: AbortSignal;
  /** Aborts when the job should checkpoint and yield (the worker stops, the queue is paused, the worker quieted,
   * or the job paused by a signal): throw `Interrupted` after the checkpoint. */
  readonly stopping: AbortSignal;
  header(name: string): string | undefined;
  /** For a job a schedule enqueued: its name and the fire time it ran for (ms), from `x-schedule` and
   * `x-fire-ms`. */
  readonly schedule?: { name: string; fireMs: number };
  /** Records progress (any CBOR value); false if this delivery no longer owns the job. */
  progress(value: unknown): Promise<boolean>;
  /** Saves a checkpoint; its version, or undefined if this delivery no longer owns the job. */
  checkpoint(state: unknown, label?: string): Promise<number | undefined>;
  /** The newest checkpoint: where a previous delivery left off. */
  resume(): Promise<Checkpoint | undefined>;
}
