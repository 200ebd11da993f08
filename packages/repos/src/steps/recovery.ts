import { type AuditActor, checkActor } from "../audit-repo.js";
import { type Executor, translateErrors } from "../db.js";
import { InvalidInputError } from "../errors.js";
import { rescueStatement, sweepTimeoutsStatement } from "../sql/rescue.js";
import { requireInt } from "../validate.js";

/** A step a rescue moved, and the worker that had held it. */
export interface RescuedStep {
  jobId: string;
  stepName: string;
  /** Claims of the step so far. */
  attempts: number;
  /** The worker that held it. */
  workerId: string;
}

/** Free rescues a step gets by default before a rescue spends its own retries (`maxRescues`). */
export const DEFAULT_MAX_RESCUES = 3;

export interface RescueOptions {
  /** A running step is rescued when its worker's last heartbeat is older than this. */
  staleAfterMs: number;
  /** Recorded in each rescued step's `step.rescued` audit event; default `{ type: "system" }`. */
  actor?: AuditActor;
  /**
   * The crash budget: how many rescues of a step are free (0 to 1000,
   * default `DEFAULT_MAX_RESCUES` = 3). A free rescue puts the step back to
   * `ready` at once, without backoff, and does not spend its `maxRetries`
   * (the step did not fail; its worker died). Once a step has had this many,
   * a rescue counts as a failed attempt under its retry policy.
   */
  maxRescues?: number;
}

/** Validates a `maxRescues` option (0 to 1000; default `DEFAULT_MAX_RESCUES`). */
export function maxRescuesOf(value: unknown, field = "maxRescues"): number {
  return value === undefined ? DEFAULT_MAX_RESCUES : requireInt(field, value, 0, 1000);
}

/**
 * Recovers the steps of workers that stopped heartbeating (crashed, killed,
 * partitioned): a running step whose worker's `last_heartbeat` is older than
 * `staleAfterMs` (by the database's clock) goes back to the queue. The first
 * `maxRescues` rescues of a step (default 3) are free: it is `ready` at once
 * (no backoff) and its own retry budget is untouched (`rescues` and
 * `maxRetries` both go up by one, so `maxRetries - rescues` stays the policy
 * it was created with). After that a rescue is a failed attempt under the
 * step's retry policy: back to `ready` after its retry delay while it has
 * retries left, else `failed` and its job advanced. Either way the attempt
 * gets a `retryHistory` entry ("worker … stopped heartbeating"). A step whose
 * job was cancelled (`cancelRequestedAt`) is never requeued: it becomes
 * `cancelled`. Locks each job row before its steps, skipping jobs locked by a
 * report in flight (they are rescued on the next run), and each step is
 * guarded by its worker and attempt, so a rescue never overwrites a step its
 * worker just finished; a late report from the rescued worker is refused by
 * its guard (`StepOwnershipError`; a late `fail` is answered `repeated`).
 * Safe to run from several processes. Wakes `listenForReady` listeners for
 * requeued steps. Each step it moves gets a `step.rescued` audit event
 * (under its job; details: step, worker, attempt, outcome) in the same
 * statement. Returns what it requeued, failed and cancelled. Throws
 * `InvalidInputError` for bad options.
 */
export async function rescueStaleSteps(
  db: Executor,
  options: RescueOptions,
): Promise<{ requeued: RescuedStep[]; failed: RescuedStep[]; cancelled: RescuedStep[] }> {
  const staleAfterMs = requireInt("staleAfterMs", options.staleAfterMs, 1, 2 ** 31 - 1);
  const actor = checkActor("actor", options.actor);
  if ((options as { maxAttempts?: unknown }).maxAttempts !== undefined) {
    throw new InvalidInputError("maxAttempts", "is gone: each step's maxRetries is its budget, for rescues too");
  }
  const maxRescues = maxRescuesOf(options.maxRescues);
  const { rows } = await translateErrors(db, () =>
    db.execute<{
      job_id: string;
      step_name: string;
      attempts: number;
      worker_id: string;
      outcome: "requeued" | "failed" | "cancelled";
    }>(rescueStatement(staleAfterMs, maxRescues, actor)),
  );
  const refs = (outcome: string) =>
    rows
      .filter((r) => r.outcome === outcome)
      .map((r) => ({
        jobId: r.job_id,
        stepName: r.step_name,
        attempts: Number(r.attempts),
        workerId: r.worker_id,
      }));
  return { requeued: refs("requeued"), failed: refs("failed"), cancelled: refs("cancelled") };
}

/** A running step `sweepTimeouts` failed, and what became of it. */
export interface TimedOutStep {
  jobId: string;
  stepName: string;
  /** The worker that ran it, and its attempt (its guard: its late report is refused). */
  workerId: string;
  attempt: number;
  /** `retried`: back to ready by its retry policy; `failed`: for good (its job advanced). */
  outcome: "retried" | "failed";
}

/**
 * Enforces `timeoutSecs`, in one statement (`stroem_sweep_timeouts`); run it
 * periodically, from any number of processes. A running step past
 * `started_at + timeoutSecs` fails ("timed out: running for more than N s")
 * as its worker's failure would: its retry policy applies, and its job is
 * advanced. A job not finished `timeoutSecs` after its creation fails
 * (`errorMessage` says so, `completed_at` set); its pending, ready and
 * suspended steps are cancelled and its running ones get
 * `cancelRequestedAt`. A suspended gate past `suspendedAt + timeoutSecs` is
 * rejected as timed out (`gates`; its output says `timedOut`), and so is a
 * `task` step waiting that long for its child job (in `gates` too). Child
 * jobs whose parent step ended without them (that timeout, their parent
 * job's timeout, a purge of the parent) are cancelled (`children`; a
 * `job.cancelled` event with `orphaned`), skipping any a report holds. Workers learn
 * both from `WorkerRepo.heartbeat` (a timed-out step when they list what they
 * run, a job's steps as a cancel). Locks job rows in job id order, skipping
 * those a report holds (swept on the next run). The candidates come from
 * partial indexes (running steps with a timeout, unfinished jobs with a
 * timeout), so a sweep's cost follows their number, not the table's. Each
 * step and job it fails gets a `step.timed_out` / `job.timed_out` audit
 * event (under the job, by `options.actor`, default the system) in the same
 * statement.
 */
export async function sweepTimeouts(
  db: Executor,
  options: { actor?: AuditActor } = {},
): Promise<{
  steps: TimedOutStep[];
  gates: Array<{ jobId: string; stepName: string }>;
  jobs: string[];
  children: string[];
}> {
  const actor = checkActor("actor", options?.actor);
  const { rows } = await translateErrors(db, () =>
    db.execute<{
      kind: "step" | "gate" | "job" | "child";
      job_id: string;
      step_name: string | null;
      worker_id: string | null;
      attempt: number | null;
      outcome: "retried" | "failed";
    }>(sweepTimeoutsStatement(actor)),
  );
  return {
    steps: rows
      .filter((r) => r.kind === "step")
      .map((r) => ({
        jobId: r.job_id,
        stepName: r.step_name as string,
        workerId: r.worker_id as string,
        attempt: Number(r.attempt),
        outcome: r.outcome,
      })),
    gates: rows.filter((r) => r.kind === "gate").map((r) => ({ jobId: r.job_id, stepName: r.step_name as string })),
    jobs: rows.filter((r) => r.kind === "job").map((r) => r.job_id),
    children: rows.filter((r) => r.kind === "child").map((r) => r.job_id),
  };
}
