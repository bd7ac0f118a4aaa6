/** The wire format (SPEC.md section 3): payloads and results are one CBOR value each. cbor2 (npm) reads every
 * encoding of RFC 8949 the conformance vectors list (indefinite-length strings and maps included) and refuses
 * bytes after the value. */

import { decode as cborDecode, decodeSequence, encode as cborEncode } from "cbor2";
import { PayloadTooLarge, ProtocolError } from "./errors.js";

/** The largest payload a rill worker accepts by default (1 MiB). */
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/** `value` as CBOR bytes, refused over `limit` bytes (the consumers' limit). */
export function encode(value: unknown, limit = DEFAULT_MAX_PAYLOAD): Buffer {
  const data = Buffer.from(cborEncode(value));
  if (data.length > limit) throw new PayloadTooLarge(data.length, limit);
  return data;
}

/** Exactly one CBOR value (trailing bytes are an error, SPEC.md section 3); maps with text keys as objects, 64-bit
 * integers as numbers while they are exact (bigint beyond). */
export function decode(data: Uint8Array): unknown {
  try {
    return cborDecode(new Uint8Array(data));
  } catch (e) {
    throw new ProtocolError("payload", e instanceof Error ? e.message : String(e));
  }
}

/** The first CBOR value of `data`, and whether bytes follow it (a payload must hold exactly one value: the caller
 * judges the value's type first, then the trailing bytes, as every rill client does). */
export function decodeFirst(data: Uint8Array): { value: unknown; trailing: boolean } {
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
