/** How a worker follows the queue's signals (SPEC.md section 6b): cancel a running job, pause and resume, quiet,
 * stop; each answered with an outcome. */

import { fields } from "../scripts.js";
import type { Redis } from "ioredis";
import { sleep } from "./base.js";
import { Upkeep } from "./upkeep.js";

export abstract class Listening<T> extends Upkeep<T> {
  protected async listen(conn: Redis): Promise<void> {
    while (!this.stopping) {
      let got: [string, [string, string[]][]][] | null;
      try {
        got = (await conn.xread("BLOCK", this.o.blockMs, "STREAMS", this.keys.signals, this.signalsAfter)) as typeof got;
      } catch (e) {
        if (this.stopping) return;
        console.warn(`rill: reading signals failed (${e}); retrying`);
        await sleep(500);
        continue;
      }
      for (const [, entries] of got ?? []) {
        for (const [sid, flat] of entries) {
          this.signalsAfter = sid;
          const f = fields(flat);
          await this.apply(f, sid).catch((e) => console.warn(`rill: signal ${sid} not applied: ${e}`));
        }
      }
    }
  }

  protected async apply(f: Record<string, string>, sid: string): Promise<void> {
    const kind = f.kind ?? "";
    const target = f.target ?? "";
    const mine = target === "queue" || target === `worker:${this.consumer}`;
    if (target.startsWith("job:")) {
      const d = [...this.held.values()].find((d) => d.env.jobId === target.slice(4));
      if (!d) return; // another worker's job, or none: not ours to answer
      if (kind === "cancel") {
        d.cancelRequested = true;
        d.abort.abort(new Error("cancelled"));
        await this.outcome(sid, "applied", "cancelling the running job");
      } else {
        if (kind === "pause") {
          // A session: the job checkpoints and yields at `job.stopping`, and is parked until resumed.
          d.parkRequested = true;
          d.stopping.abort(new Error("paused"));
          await this.outcome(sid, "applied", "parking the job once it yields");
        } else {
          await this.outcome(sid, "ignored", `${kind} of a running job does not apply`);
        }
      }
    } else if (!mine) {
      return;
    } else if (kind === "pause" && target === "queue") {
      this.paused = true;
      this.askToYield();
      await this.outcome(sid, "applied", "taking no new jobs");
    } else if (kind === "resume" && target === "queue") {
      this.paused = false;
      this.wake();
      await this.outcome(sid, "applied", "taking jobs again");
    } else if (kind === "quiet") {
      this.quiet = true;
      this.askToYield();
      await this.outcome(sid, "applied", "taking no new jobs");
    } else if (kind === "stop") {
      await this.outcome(sid, "applied", "stopping");
      this.stopping = true;
      this.wake();
      this.conns[0]?.disconnect(); // unblock the read
    } else {
      await this.outcome(sid, "ignored", `${kind} is not handled by this worker`);
    }
  }

  protected async outcome(sid: string, outcome: string, reason: string): Promise<void> {
    await this.redis.xadd(this.keys.outcomes, "MAXLEN", "~", 10_000, "*", "signal", sid, "receiver", this.consumer,
      "outcome", outcome, "reason", reason, "ms", Date.now());
  }
}
