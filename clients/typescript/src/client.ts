/** `Client`: one Redis connection and handles on queues. */

import { Redis } from "ioredis";
import { DEFAULT_NAMESPACE, QueueKeys, validateName } from "./keys.js";
import { Partitions } from "./partition.js";
import { Queue } from "./queue.js";
import { DEFAULT_MAX_PAYLOAD } from "./wire.js";

export interface ClientOptions {
  /** The first key segment; every rill client of a deployment must use the same (default `rill`). */
  namespace?: string;
  /** The largest payload to send, in bytes (default 1 MiB, what rill workers accept). */
  maxPayload?: number;
}

/** A rill client on `url` (`redis://`, `rediss://`). Lazy, like the Rust client: nothing connects until the first
 * command.
 *
 * ```ts
 * const client = new Client("redis://127.0.0.1:6379");
 * const id = await client.queue("emails").enqueue({ to: "ada@example.com" });
 * ```
 */
export class Client {
  readonly namespace: string;
  readonly maxPayload: number;
  readonly redis: Redis;
  private readonly listed = new Set<string>();
  private readonly partitionsOf = new Map<string, Partitions | undefined>();

  constructor(readonly url = "redis://127.0.0.1:6379", options: ClientOptions = {}) {
    this.namespace = options.namespace ?? DEFAULT_NAMESPACE;
    validateName(this.namespace);
    this.maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 3 });
  }

  /** A handle on queue `name` (checked, not created: a queue exists once it has keys). */
  queue(name: string): Queue {
    return new Queue(this, new QueueKeys(this.namespace, name));
  }

  /** A second connection of the same kind (blocking reads own theirs). */
  duplicate(): Redis {
    return this.redis.duplicate();
  }

  /** Adds the queue to the namespace's queue list, once per client (SPEC.md section 8). */
  async listQueue(keys: QueueKeys): Promise<void> {
    if (this.listed.has(keys.queue)) return;
    this.listed.add(keys.queue);
    await this.redis.sadd(keys.queues, keys.queue);
  }

  /** The queue's partitions (SPEC.md section 2a), undefined if it is not partitioned; read once per client (they
   * never change once set). */
  async partitions(keys: QueueKeys): Promise<Partitions | undefined> {
    if (this.partitionsOf.has(keys.queue)) return this.partitionsOf.get(keys.queue);
    const [count, tags] = await this.redis.hmget(keys.config, "partitions", "partition_tags");
    const parts = Partitions.fromConfig(keys.queue, count, tags);
    this.partitionsOf.set(keys.queue, parts);
    return parts;
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
