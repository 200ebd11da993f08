import { WORKER_ACTION_TYPES } from "@stroem/schema";
import pg from "pg";
import { parseDatabaseUrl, searchPathFor } from "./db.js";
import { translateError } from "./translate-error.js";
import { requireCapabilities } from "./validate.js";

/**
 * The channel on which steps becoming ready are announced in `schema` (the
 * payload is their action type): `stroem_ready.<schema>`, one per schema
 * since NOTIFY is database-wide, so workers of two deployments in one
 * database never wake each other. The SQL twin is `stroem_ready_channel()`
 * (packages/schema/sql/10_advance.sql), which the listener asks for.
 */
export function readyChannel(schema = "public"): string {
  return `stroem_ready.${schema}`.slice(0, 63);
}

export interface ListenOptions {
  /** Wake only for steps of these action types. Default: every type. */
  capabilities?: readonly string[];
  /** The schema the tables live in, as `createPool`'s `schema` (its channel is listened to). */
  schema?: string | undefined;
  /** Connection errors (the listener reconnects by itself). Default: ignore. */
  onError?: (error: Error) => void;
}

export interface WaitOptions {
  /** Give up after this many ms (resolve `false`). Default: wait until woken, aborted or closed. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ReadyListener {
  /**
   * Resolves `true` as soon as a step of a listened action type became ready
   * since the previous `wait` returned (at once if that already happened, so
   * no wake-up between two claims is lost), or after a reconnect (a
   * notification may have been missed); `false` on timeout, abort or close.
   */
  wait(options?: WaitOptions): Promise<boolean>;
  /** Stops listening and closes the connection; pending waits resolve `false`. */
  close(): Promise<void>;
}

const MAX_BACKOFF_MS = 5000;

/**
 * Listens for steps becoming ready (`LISTEN` on the channel of the schema
 * the connection's search path finds the tables in, `readyChannel`), on a connection
 * of its own to `url`, so idle workers can sleep until there is work instead
 * of polling: every statement that makes steps ready (job creation,
 * promotion, a rescue's requeue) sends `pg_notify` in its transaction. Needs
 * a session connection (a direct one, or a session-mode pooler): LISTEN does
 * not work through a transaction pooler; polling alone still works there.
 *
 * Use: claim; when nothing was claimed, `await listener.wait({ timeoutMs:
 * 1000 })` and claim again (the timeout bounds the delay should a
 * notification be lost, and the polling to one claim a second per worker).
 * The first connection must succeed (else `ConnectionError`); after that it
 * reconnects by itself with backoff (100 ms doubling to 5 s).
 */
export async function listenForReady(url: string, options: ListenOptions = {}): Promise<ReadyListener> {
  const target = parseDatabaseUrl(url);
  const searchPath = searchPathFor(url, options.schema);
  const caps =
    options.capabilities === undefined
      ? undefined
      : new Set(requireCapabilities("capabilities", options.capabilities, WORKER_ACTION_TYPES));
  let woken = false;
  let closed = false;
  let client: pg.Client | undefined;
  let retry: NodeJS.Timeout | undefined;
  let backoff = 100;
  let channel = readyChannel();
  const waiters = new Set<(woke: boolean) => void>();

  const wake = () => {
    woken = true;
    for (const w of waiters) w(true);
  };

  const connect = async (): Promise<void> => {
    const c = new pg.Client({
      connectionString: url,
      application_name: "stroem-listener",
      ...(searchPath ? { options: searchPath } : {}),
    });
    c.on("notification", (msg) => {
      if (msg.channel === channel && (!caps || caps.has(msg.payload ?? ""))) wake();
    });
    const lost = (error?: Error) => {
      if (client !== c) return;
      client = undefined;
      c.end().catch(() => undefined);
      if (error) options.onError?.(translateError(error, target));
      if (!closed) retry = setTimeout(reconnect, backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    };
    c.on("error", lost);
    c.on("end", () => lost());
    await c.connect();
    const answer = await c.query<{ channel: string }>("select stroem_ready_channel() as channel");
    channel = answer.rows[0]?.channel ?? readyChannel();
    await c.query(`listen "${channel.replaceAll('"', '""')}"`);
    if (closed) {
      await c.end();
      return;
    }
    client = c;
    backoff = 100;
  };

  const reconnect = () => {
    retry = undefined;
    connect().then(
      // Notifications sent while we were away are lost: wake the waiters so they claim.
      () => wake(),
      (error: Error) => {
        options.onError?.(translateError(error, target));
        if (!closed) retry = setTimeout(reconnect, backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      },
    );
  };

  try {
    await connect();
  } catch (error) {
    throw translateError(error, target);
  }

  return {
    wait({ timeoutMs, signal } = {}) {
      if (woken || closed || signal?.aborted) {
        const result = woken && !closed && !signal?.aborted;
        woken = false;
        return Promise.resolve(result);
      }
      return new Promise<boolean>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const done = (result: boolean) => {
          waiters.delete(done);
          if (timer) clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          if (result) woken = false;
          resolve(result);
        };
        const onAbort = () => done(false);
        waiters.add(done);
        signal?.addEventListener("abort", onAbort, { once: true });
        if (timeoutMs !== undefined) timer = setTimeout(() => done(false), timeoutMs);
      });
    },
    async close() {
      closed = true;
      if (retry) clearTimeout(retry);
      for (const w of [...waiters]) w(false);
      const c = client;
      client = undefined;
      await c?.end().catch(() => undefined);
    },
  };
}
