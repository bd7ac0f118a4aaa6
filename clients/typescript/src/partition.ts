/** Partitioned queues (SPEC.md section 2a): the partitions a queue's settings name, and where a job goes. */

import { randomBytes } from "node:crypto";

import { ProtocolError } from "./errors.js";

export const MAX_PARTITIONS = 256;

/** 32-bit FNV-1a of `data`: the routing hash. */
export function fnv1a32(data: Buffer): number {
  let h = 0x811c9dc5;
  for (const b of data) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h >>> 0;
}

/** A partitioned queue's hash tags, partition 0 (the queue's name) first. */
export class Partitions {
  constructor(readonly tags: string[]) {}

  /** The partitions stored in `<P>:config` (`partitions`, `partition_tags`); undefined if not partitioned. */
  static fromConfig(queue: string, count: string | null, tags: string | null): Partitions | undefined {
    if (count === null) return undefined;
    const what = "the queue's partitions (<P>:config)";
    if (!/^\d+$/.test(count)) throw new ProtocolError(what, "`partitions` is not a number");
    const n = Number(count);
    if (n <= 1) return undefined;
    const list = (tags ?? "").split(" ").filter((t) => t !== "");
    if (list.length !== n || n > MAX_PARTITIONS) throw new ProtocolError(what, "`partition_tags` does not list `partitions` tags");
    list.forEach((tag, i) => {
      if (!isTagOf(queue, i, tag)) throw new ProtocolError(what, `\`${tag}\` is not a tag of partition ${i}`);
    });
    return new Partitions(list);
  }

  get length(): number {
    return this.tags.length;
  }

  /** The partition of a job whose routing key (dedup key, else job id) is `key`. */
  ofKey(key: string): number {
    return fnv1a32(Buffer.from(key, "utf8")) % this.tags.length;
  }

  /** A generated job id (`~<ms>.<16 hex>`) that routes to `partition`. */
  idIn(partition: number, nowMs: number): string {
    for (;;) {
      const id = `~${nowMs}.${randomBytes(8).toString("hex")}`;
      if (this.ofKey(id) === partition % this.tags.length) return id;
    }
  }
}

function isTagOf(queue: string, i: number, tag: string): boolean {
  if (i === 0) return tag === queue;
  if (!tag.startsWith(`${queue}~`)) return false;
  const m = /^(\d+)(?:\.(\d+))?$/.exec(tag.slice(queue.length + 1));
  return m !== null && Number(m[1]) === i;
}
