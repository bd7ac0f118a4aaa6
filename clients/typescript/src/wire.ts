/** The wire format (SPEC.md section 3): payloads and results are one CBOR value each. Reading uses cbor2 (npm),
 * which reads every encoding of RFC 8949 the conformance vectors list (indefinite-length strings and maps included),
 * refuses invalid UTF-8 and bytes after the value; writing uses cbor-x, a hundred times faster (70 against 0.6 us
 * for a small map), in plain CBOR (no record extension) with minimal map headers. */

import { decode as cborDecode, decodeSequence } from "cbor2";
import { Decoder, Encoder } from "cbor-x";
import { PayloadTooLarge, ProtocolError } from "./errors.js";

/** The largest payload a rill worker accepts by default (1 MiB). */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

const encoder = new Encoder({ useRecords: false, variableMapSize: true });

/** `value` as CBOR bytes, refused over `limit` bytes (the consumers' limit). */
export function encode(value: unknown, limit = DEFAULT_MAX_PAYLOAD): Buffer {
  const data = Buffer.from(encoder.encode(value));
  if (data.length > limit) throw new PayloadTooLarge(data.length, limit);
  return data;
}

/** Exactly one CBOR value (trailing bytes are an error, SPEC.md section 3); maps with text keys as objects, 64-bit
 * integers as numbers while they are exact (bigint beyond). */
export function decode(data: Uint8Array): unknown {
  const fast = decodeFast(data);
  if (fast !== NOT_PLAIN) return fast;
  try {
    return cborDecode(new Uint8Array(data));
  } catch (e) {
    throw new ProtocolError("payload", e instanceof Error ? e.message : String(e));
  }
}

/** The first CBOR value of `data`, and whether bytes follow it (a payload must hold exactly one value: the caller
 * judges the value's type first, then the trailing bytes, as every rill client does). */
export function decodeFirst(data: Uint8Array): { value: unknown; trailing: boolean } {
  const fast = decodeFast(data);
  if (fast !== NOT_PLAIN) return { value: fast, trailing: false };
  const seq = decodeSequence(new Uint8Array(data));
  const first = seq.next();
  if (first.done) throw new ProtocolError("payload", "no CBOR value");
  let trailing: boolean;
  try {
    trailing = !seq.next().done;
  } catch {
    trailing = true;
  }
  return { value: first.value, trailing };
}

// The fast path: cbor-x reads a payload in well under a microsecond where cbor2 takes tens. It is lenient where
// SPEC.md is strict (it reads invalid UTF-8 as U+FFFD, and cannot read indefinite-length strings), so its answer
// is taken only for exactly one value made of plain parts (null, booleans, numbers, byte strings, arrays, maps with
// text keys) whose text holds no U+FFFD, which invalid UTF-8 always becomes; anything else is read again by cbor2,
// which decides (a real U+FFFD in a payload only costs the slow path). Maps come as Map (so a key that is not text
// is seen, not turned into one) and become objects here, as cbor2 makes them.
const fastDecoder = new Decoder({ useRecords: false, mapsAsObjects: false, int64AsNumber: true } as ConstructorParameters<typeof Decoder>[0]);
const NOT_PLAIN = Symbol("not plain");

function decodeFast(data: Uint8Array): unknown {
  const values: unknown[] = [];
  try {
    fastDecoder.decodeMultiple(Buffer.from(data.buffer, data.byteOffset, data.byteLength), (v: unknown) => {
      values.push(v);
    });
  } catch {
    return NOT_PLAIN;
  }
  return values.length === 1 ? plain(values[0], 0) : NOT_PLAIN;
}

/** `v` with its maps as objects, or NOT_PLAIN if any part is not plain. */
function plain(v: unknown, depth: number): unknown {
  if (depth > 64) return NOT_PLAIN;
  if (v === null || v === undefined || typeof v === "boolean" || typeof v === "number") return v;
  if (typeof v === "string") return v.includes("\uFFFD") ? NOT_PLAIN : v;
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x = plain(v[i], depth + 1);
      if (x === NOT_PLAIN) return NOT_PLAIN;
      v[i] = x;
    }
    return v;
  }
  if (v instanceof Map) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of v) {
      if (typeof k !== "string" || k.includes("\uFFFD") || k === "__proto__") return NOT_PLAIN;
      const y = plain(x, depth + 1);
      if (y === NOT_PLAIN) return NOT_PLAIN;
      out[k] = y;
    }
    return out;
  }
  return NOT_PLAIN;
}
