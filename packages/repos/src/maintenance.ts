import { sql } from "drizzle-orm";
import { type Executor, transaction } from "./db.js";
import { InvalidInputError } from "./errors.js";
import { purgeFinished } from "./retention.js";
import { rescueStaleSteps, sweepTimeouts } from "./steps/recovery.js";
import { requireInt } from "./validate.js";
import { markStaleInactive } from "./worker-repo.js";

/**
 * Maintenance: the periodic sweeps that keep a run moving without an
 * operator (rescue of dead workers' steps, timeouts, inactive workers). Any
 * number of processes may run it against one database: each sweep runs in a
 * transaction that first takes a transaction-level advisory lock of its own
 * (`pg_try_advisory_xact_lock`, which works behind a transaction pooler) and
 * is skipped when another process holds it.
 */

/** The first key of every maintenance advisory lock (`pg_try_advisory_xact_lock(MAINTENANCE_LOCK_CLASS, sweep.lockId)`): "STRM". */
export const MAINTENANCE_LOCK_CLASS = 0x5354524d;

/** What one run of a sweep did. */
export interface SweepEvent {
  sweep: string;
  /** Another process held this sweep's lock: nothing was done. */
  skipped: boolean;
  /** How many things it changed (steps rescued or timed out, workers marked inactive, …); 0 when skipped. */
  changed: number;
  /** The sweep's own result (e.g. `rescueStaleSteps`' `{ requeued, failed, cancelled }`); undefined when skipped. */
  result: unknown;
  durationMs: number;
}

/**
 * A sweep kind. The built-in ones are made from `MaintenanceOptions`
 * (`builtInSweeps`); more can be given in `MaintenanceOptions.sweeps` (a
 * retention purge, say) and run the same way.
 */
export interface MaintenanceSweep {
  /** A short name for events and errors (`rescue`, `timeouts`, `inactive`, …). */
  name: string;
  /** The second key of its advisory lock; unique among the sweeps (built-ins use 1 to 9). */
  lockId: number;
  /** Time between the end of one run and the start of the next, ms. */
  intervalMs: number;
  /** The work, inside the sweep's transaction (lock held, statement timeout set); returns what it changed and its result. */
  run(tx: Executor): Promise<{ changed: number; result: unknown }>;
}

export interface MaintenanceOptions {
  /** A running step is rescued once its worker's heartbeat is this old. Default 30,000 (six missed 5 s heartbeats). */
  staleAfterMs?: number;
  /** The crash budget passed to `rescueStaleSteps` (default 3). */
  maxRescues?: number;
  /** How often the rescue runs, ms; 0 turns it off. Default 5,000. */
  rescueEveryMs?: number;
  /** How often `sweepTimeouts` runs, ms; 0 turns it off. Default 5,000. */
  timeoutsEveryMs?: number;
  /** An active worker is marked inactive once its heartbeat is this old. Default 300,000 (5 min). */
  inactiveAfterMs?: number;
  /** How often workers are marked inactive, ms; 0 turns it off. Default 60,000. */
  inactiveEveryMs?: number;
  /**
   * The retention purge (`purgeFinished`), off unless given: finished jobs
   * older than `olderThanMs` (their steps with them) and audit events older
   * than `auditOlderThanMs` (default the same), at most `maxBatchesPerRun`
   * batches of `batchSize` a run (defaults 20 and 1,000), every
   * `purgeEveryMs`. Its batches commit one by one on the pool's other
   * connections while the sweep's transaction holds its lock.
   */
  purge?: { olderThanMs: number; auditOlderThanMs?: number; batchSize?: number; maxBatchesPerRun?: number };
  /** How often the purge runs, ms (with `purge`). Default 600,000 (10 min). */
  purgeEveryMs?: number;
  /** Longest a sweep's statement may run (`SET LOCAL statement_timeout`), ms. Default 30,000. */
  statementTimeoutMs?: number;
  /**
   * More sweep kinds, run like the built-ins (own interval, own advisory
   * lock, same statement timeout, errors and events). The place for a
   * retention purge.
   */
  sweeps?: readonly MaintenanceSweep[];
  /** Called after every run of a sweep (also when it did nothing, or was skipped). Must not throw. */
  onSweep?: (event: SweepEvent) => void;
  /** Called when a sweep fails; the loop carries on at its next interval. Default: `console.error`. */
  onError?: (error: unknown, sweep: string) => void;
}

export const MAINTENANCE_DEFAULTS = {
  staleAfterMs: 30_000,
  rescueEveryMs: 5_000,
  timeoutsEveryMs: 5_000,
  inactiveAfterMs: 300_000,
  inactiveEveryMs: 60_000,
  purgeEveryMs: 600_000,
  purgeMaxBatchesPerRun: 20,
  statementTimeoutMs: 30_000,
} as const;

/** A running maintenance loop. */
export interface Maintenance {
  /** Stops every sweep's loop and waits for the runs in flight; safe to call twice. */
  stop(): Promise<void>;
}

const MAX_MS = 2 ** 31 - 1;
/** Beyond a sweep's statement timeout: the pool's wait for a connection and the round trips. */
const HUNG_MARGIN_MS = 15_000;

/**
 * The built-in sweeps for these options, in the order they first run (those
 * with interval 0 left out). The purge needs `pool` (its batches commit on
 * their own); without it, `options.purge` is refused.
 */
export function builtInSweeps(options: MaintenanceOptions = {}, pool?: Executor): MaintenanceSweep[] {
  const o = { ...MAINTENANCE_DEFAULTS, ...options };
  const staleAfterMs = requireInt("staleAfterMs", o.staleAfterMs, 1, MAX_MS);
  const inactiveAfterMs = requireInt("inactiveAfterMs", o.inactiveAfterMs, 1, MAX_MS);
  const maxRescues = o.maxRescues;
  const sweeps: MaintenanceSweep[] = [
    {
      name: "rescue",
      lockId: 1,
      intervalMs: requireInt("rescueEveryMs", o.rescueEveryMs, 0, MAX_MS),
      async run(tx) {
        const result = await rescueStaleSteps(tx, {
          staleAfterMs,
          ...(maxRescues === undefined ? {} : { maxRescues }),
        });
        return { changed: result.requeued.length + result.failed.length + result.cancelled.length, result };
      },
    },
    {
      name: "timeouts",
      lockId: 2,
      intervalMs: requireInt("timeoutsEveryMs", o.timeoutsEveryMs, 0, MAX_MS),
      async run(tx) {
        const result = await sweepTimeouts(tx);
        return {
          changed: result.steps.length + result.gates.length + result.jobs.length + result.children.length,
          result,
        };
      },
    },
    {
      name: "inactive",
      lockId: 3,
      intervalMs: requireInt("inactiveEveryMs", o.inactiveEveryMs, 0, MAX_MS),
      async run(tx) {
        const workers = await markStaleInactive(tx, { inactiveAfterMs });
        return { changed: workers.length, result: { workers } };
      },
    },
  ];
  if (options.purge !== undefined) {
    const p = options.purge;
    if (typeof p !== "object" || p === null) throw new InvalidInputError("purge", "must be an object");
    if (pool === undefined) throw new InvalidInputError("purge", "needs the pool (startMaintenance passes it)");
    const olderThan = requireInt("purge.olderThanMs", p.olderThanMs, 1, Number.MAX_SAFE_INTEGER);
    const auditOlderThan =
      p.auditOlderThanMs === undefined
        ? olderThan
        : requireInt("purge.auditOlderThanMs", p.auditOlderThanMs, 1, Number.MAX_SAFE_INTEGER);
    const maxBatches = requireInt(
      "purge.maxBatchesPerRun",
      p.maxBatchesPerRun ?? MAINTENANCE_DEFAULTS.purgeMaxBatchesPerRun,
      1,
      10_000,
    );
    sweeps.push({
      name: "purge",
      lockId: 4,
      intervalMs: requireInt("purgeEveryMs", o.purgeEveryMs, 0, MAX_MS),
      // The lock is held by the sweep's transaction; the batches run on the
      // pool, each its own short transaction (purgeFinished refuses one).
      async run() {
        const result = await purgeFinished(pool, {
          olderThan,
          auditOlderThan,
          maxBatches,
          ...(p.batchSize === undefined ? {} : { batchSize: p.batchSize }),
        });
        return { changed: result.jobs + result.auditEvents, result };
      },
    });
  }
  return sweeps.filter((s) => s.intervalMs > 0);
}

/**
 * Runs one sweep once: in a transaction, takes its advisory lock without
 * waiting (skipped if another process holds it), sets the statement timeout
 * for the transaction (`SET LOCAL`, through `set_config`), then runs it.
 * Throws what the sweep throws (the transaction is rolled back).
 */
export async function runSweep(db: Executor, sweep: MaintenanceSweep, statementTimeoutMs: number): Promise<SweepEvent> {
  const started = performance.now();
  // Not db.transaction: see `transaction` (a failed BEGIN must not leak the connection).
  const outcome = await transaction(db, async (tx) => {
    const { rows } = await tx.execute<{ locked: boolean }>(
      sql`select pg_try_advisory_xact_lock(${MAINTENANCE_LOCK_CLASS}::int, ${sweep.lockId}::int) as locked`,
    );
    if (!rows[0]?.locked) return undefined;
    await tx.execute(sql`select set_config('statement_timeout', ${`${statementTimeoutMs}ms`}, true)`);
    return sweep.run(tx);
  });
  return {
    sweep: sweep.name,
    skipped: outcome === undefined,
    changed: outcome?.changed ?? 0,
    result: outcome?.result,
    durationMs: performance.now() - started,
  };
}

/**
 * Starts maintenance on `db` (a pool: each sweep needs a connection of its
 * own for its transaction) and returns a handle whose `stop()` waits for the
 * runs in flight. Each sweep runs at once, then `intervalMs` after each run
 * ends, on its own timer: the rescue of dead workers' steps
 * (`JobStepRepo.rescueStaleSteps`, every 5 s, steps of workers silent for
 * 30 s), the timeout sweep (`JobStepRepo.sweepTimeouts`, every 5 s) and
 * marking workers inactive (`WorkerRepo.markStaleInactive`, every minute,
 * workers silent for 5 min), plus `options.sweeps`. So a dead worker's step
 * is back in the queue within `staleAfterMs + rescueEveryMs` (plus the
 * sweep's own time). Errors go to `onError` and the loop carries on; a
 * run that has not settled 15 s past its statement timeout (a connection
 * lost without its socket noticing) is given up and reported the same way;
 * `onSweep` hears of every run. Throws `InvalidInputError` for bad options
 * (before anything runs).
 */
export function startMaintenance(db: Executor, options: MaintenanceOptions = {}): Maintenance {
  const statementTimeoutMs = requireInt(
    "statementTimeoutMs",
    options.statementTimeoutMs ?? MAINTENANCE_DEFAULTS.statementTimeoutMs,
    1,
    MAX_MS,
  );
  const sweeps = [...builtInSweeps(options, db), ...(options.sweeps ?? [])];
  const ids = new Set<number>();
  for (const [i, s] of sweeps.entries()) {
    if (typeof s?.run !== "function" || typeof s.name !== "string") {
      throw new InvalidInputError(`sweeps[${i}]`, "must have a name and a run function");
    }
    requireInt(`sweep ${s.name}: intervalMs`, s.intervalMs, 1, MAX_MS);
    requireInt(`sweep ${s.name}: lockId`, s.lockId, -(2 ** 31), MAX_MS);
    if (ids.has(s.lockId)) throw new InvalidInputError(`sweep ${s.name}: lockId`, `${s.lockId} is used twice`);
    ids.add(s.lockId);
  }
  /** A run not settled this long after it started is given up (the watchdog above). */
  const hungAfterMs = statementTimeoutMs + HUNG_MARGIN_MS;
  const onError = options.onError ?? ((error, sweep) => console.error(`[stroem maintenance] ${sweep}:`, error));
  let stopped = false;
  const timers = new Set<NodeJS.Timeout>();
  const inFlight = new Set<Promise<void>>();

  const schedule = (sweep: MaintenanceSweep, delayMs: number) => {
    if (stopped) return;
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (stopped) return;
      const run = (async () => {
        // The watchdog: a run that has not settled well past its statement
        // timeout (a connection lost without the socket noticing) is given up
        // (reported to onError) so the loop carries on; its late outcome is ignored.
        const attempt = runSweep(db, sweep, statementTimeoutMs);
        attempt.catch(() => {});
        let timer: NodeJS.Timeout | undefined;
        const watchdog = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`the ${sweep.name} sweep did not finish within ${hungAfterMs} ms: given up`)),
            hungAfterMs,
          );
        });
        try {
          const event = await Promise.race([attempt, watchdog]);
          options.onSweep?.(event);
        } catch (error) {
          try {
            onError(error, sweep.name);
          } catch {} // a throwing callback must not stop the loop
        } finally {
          clearTimeout(timer);
        }
      })();
      inFlight.add(run);
      void run.finally(() => {
        inFlight.delete(run);
        schedule(sweep, sweep.intervalMs);
      });
    }, delayMs);
    timers.add(timer);
  };
  for (const sweep of sweeps) schedule(sweep, 0);

  let stopping: Promise<void> | undefined;
  return {
    stop() {
      stopping ??= (async () => {
        stopped = true;
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        await Promise.all([...inFlight]);
      })();
      return stopping;
    },
  };
}
