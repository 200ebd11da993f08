import net from "node:net";
import pg from "pg";

/** Protocol code of a CancelRequest (1234 << 16 | 5678). */
const CANCEL_REQUEST_CODE = 80877102;
/** How often the cancel is sent again while the statement still has not answered. */
const CANCEL_RETRY_MS = 1000;
/** How long a cancel connection may wait for the server (or pooler) to close it. */
const CANCEL_SOCKET_TIMEOUT_MS = 30_000;

/** The parts of `pg.Client` this module reads; public in node-postgres, missing from its types. */
interface ClientInternals {
  host: string;
  port: number;
  processID: number | null;
  secretKey: number | null;
}

/**
 * A `pg.Client` class whose every statement is cancelled on the server when
 * it has not answered `timeoutMs` after it was sent: the statement timeout of
 * `createPool(url, { pooler: "transaction" })` (see `PoolOptions.pooler` for
 * why not `query_timeout`, `SET LOCAL` or a startup parameter). The cancel is
 * sent again every second until the answer arrives. Like any cancel request
 * (libpq's too) it races with the statement finishing: in the window between
 * the server answering and the answer arriving, it may reach the
 * connection's next statement instead.
 */
export function cancelingClient(timeoutMs: number, Base: typeof pg.Client = pg.Client): typeof pg.Client {
  return class CancelingClient extends Base {
    // biome-ignore lint/suspicious/noExplicitAny: node-postgres' query() has many overloads; this wraps them all
    override query(...args: any[]): any {
      const [config, values, callback] = args;
      // Submittables (cursors, streams) run for as long as their reader wants.
      if (typeof config?.submit === "function") return super.query(config, values, callback);
      const cb = typeof values === "function" ? values : callback;
      const vals = typeof values === "function" ? undefined : values;
      let timer: NodeJS.Timeout | undefined;
      const fire = () => {
        this.cancelRunning();
        timer = setTimeout(fire, CANCEL_RETRY_MS);
      };
      timer = setTimeout(fire, timeoutMs);
      const done = () => clearTimeout(timer);
      if (typeof cb === "function") {
        return super.query(config, vals, (error: Error | null, result: unknown) => {
          done();
          cb(error, result);
        });
      }
      const promise = super.query(config, vals) as Promise<unknown>;
      return promise.then(
        (result) => {
          done();
          return result;
        },
        (error: unknown) => {
          done();
          throw error;
        },
      );
    }

    /** Sends a CancelRequest for this connection's running statement; errors are ignored (the next tick retries). */
    private cancelRunning(): void {
      const { host, port, processID, secretKey } = this as unknown as ClientInternals;
      if (processID === null || secretKey === null) return;
      const message = Buffer.alloc(16);
      message.writeInt32BE(16, 0);
      message.writeInt32BE(CANCEL_REQUEST_CODE, 4);
      message.writeInt32BE(processID, 8);
      message.writeInt32BE(secretKey, 12);
      const socket = host.startsWith("/") ? net.connect(`${host}/.s.PGSQL.${port}`) : net.connect(port, host);
      // Write, then wait for the other side to hang up, as libpq does: PgBouncer 1.18
      // crashes ("bad client state: 0", pgbouncer/pgbouncer#801, fixed in 1.19) when
      // a cancel client closes its socket before PgBouncer has passed the cancel on.
      // The timeout only bounds a peer that never answers.
      socket.setTimeout(CANCEL_SOCKET_TIMEOUT_MS, () => socket.destroy());
      socket.on("error", () => socket.destroy());
      socket.on("connect", () => socket.write(message));
    }
  };
}

/** A transaction's first statement as Drizzle sends it (`begin`, maybe with an isolation level). */
const BEGIN = /^\s*(begin|start transaction)\b[^;]*$/i;

/**
 * A `pg.Client` class that appends `; set local
 * idle_in_transaction_session_timeout = <ms>` to each transaction's `BEGIN`
 * (one simple-protocol round trip, two statements; the answer is BEGIN's):
 * the idle-in-transaction timeout of `createPool(url, { pooler: "transaction"
 * })`, where startup parameters are refused and a session `SET` would leak
 * to other clients. A `SET LOCAL` ends with its transaction.
 */
export function idleInTransactionClient(timeoutMs: number, Base: typeof pg.Client = pg.Client): typeof pg.Client {
  const suffix = `; set local idle_in_transaction_session_timeout = ${Math.floor(timeoutMs)}`;
  return class IdleInTransactionClient extends Base {
    // biome-ignore lint/suspicious/noExplicitAny: node-postgres' query() has many overloads; this wraps them all
    override query(...args: any[]): any {
      const [config, values, callback] = args;
      const text = typeof config === "string" ? config : config?.text;
      const noValues = (v: unknown) =>
        v === undefined || typeof v === "function" || (Array.isArray(v) && v.length === 0);
      const plain =
        typeof text === "string" &&
        BEGIN.test(text) &&
        noValues(values) &&
        (typeof config === "string" ||
          (noValues(config.values) && !config.name && typeof config.submit !== "function"));
      if (!plain) return super.query(config, values, callback);
      const first = (result: unknown) => (Array.isArray(result) ? result[0] : result);
      const rewritten = typeof config === "string" ? text + suffix : { ...config, text: text + suffix };
      const cb = typeof values === "function" ? values : callback;
      if (typeof cb === "function") {
        return super.query(rewritten, (error: Error | null, result: unknown) => cb(error, first(result)));
      }
      return (super.query(rewritten) as Promise<unknown>).then(first);
    }
  };
}

/** The client class of a pool behind a transaction pooler: the statement and idle-in-transaction timeouts kept as above. */
export function pooledClient(options: {
  statementTimeoutMs: number | undefined;
  idleInTransactionTimeoutMs: number | undefined;
}): typeof pg.Client {
  let Client: typeof pg.Client = pg.Client;
  if (options.idleInTransactionTimeoutMs !== undefined) {
    Client = idleInTransactionClient(options.idleInTransactionTimeoutMs, Client);
  }
  if (options.statementTimeoutMs !== undefined) Client = cancelingClient(options.statementTimeoutMs, Client);
  return Client;
}
