/** Waiting for a job to end (SPEC.md section 7): one blocking read of a queue's events stream per client, shared
 * by every waiter of that queue, so a thousand waiters cost one read, not a thousand polls. Each waiter looks at
 * the job's state once after it is registered (a job that ends in between is seen either way), then waits for its
 * event, looking at the state again every few seconds in case the event never comes. */

import { fields } from "./scripts.js";
import type { Redis } from "ioredis";
import type { Client } from "./client.js";

/** Ms between looks at a waiting job's state when no event has come. */
export const RECHECK_MS = 5000;
export const ENDED = new Set(["completed", "dead", "cancelled", "unknown"]);

/** The shared read of one events stream: job id -> its waiters' wake-ups. */
export class Follower {
  private readonly waiting = new Map<string, Set<() => void>>();
  private after = "0-0";
  private conn: Redis | undefined;
  private started: Promise<void> | undefined;

  constructor(private readonly client: Client, private readonly events: string) {}

  /** Starts reading (from the newest event now) unless it reads already. */
  start(): Promise<void> {
    this.started ??= this.open();
    return this.started;
  }

  private async open(): Promise<void> {
    const conn = this.client.duplicate();
    this.conn = conn;
    const newest = await conn.xrevrange(this.events, "+", "-", "COUNT", 1);
    this.after = newest[0]?.[0] ?? "0-0";
    void this.follow(conn);
  }

  expect(id: string, wake: () => void): () => void {
    const set = this.waiting.get(id) ?? new Set();
    set.add(wake);
    this.waiting.set(id, set);
    return () => {
      set.delete(wake);
      if (!set.size) this.waiting.delete(id);
      if (!this.waiting.size) this.stop();
    };
  }

  private tell(id: string): void {
    for (const wake of this.waiting.get(id) ?? []) wake();
  }

  private stop(): void {
    this.conn?.disconnect();
    this.conn = undefined;
    this.started = undefined;
  }

  private async follow(conn: Redis): Promise<void> {
    while (this.conn === conn) {
      let got: [string, [string, string[]][]][] | null;
      try {
        got = (await conn.xread("COUNT", 100, "BLOCK", 500, "STREAMS", this.events, this.after)) as typeof got;
      } catch {
        if (this.conn !== conn) return;
        await new Promise((res) => setTimeout(res, 500)); // the waiters recheck their jobs meanwhile
        continue;
      }
      for (const [, entries] of got ?? []) {
        for (const [eid, flat] of entries) {
          this.after = eid;
          const f = fields(flat);
          if (f.event === "completed") for (const id of (f.ids ?? "").split(" ")) if (id) this.tell(id);
          if (f.event === "dead" || f.event === "cancelled") this.tell(f.id ?? "");
        }
      }
    }
  }
}

const followers = new WeakMap<Client, Map<string, Follower>>();

export function follower(client: Client, events: string): Follower {
  let byStream = followers.get(client);
  if (!byStream) followers.set(client, (byStream = new Map()));
  let f = byStream.get(events);
  if (!f) byStream.set(events, (f = new Follower(client, events)));
  return f;
}
