import type { JobStatus } from "@stroem/schema";
import type { AdvanceResult } from "../advance.js";
import { type Executor, translateErrors } from "../db.js";
import {
  InvalidInputError,
  InvalidTransitionError,
  StepNotFoundError,
  StepOwnershipError,
  type StroemDbError,
} from "../errors.js";
import { CANCEL_STEP, type CancelStepRow } from "../sql/cancel.js";
import { preparedReportAndClaim } from "../sql/claim.js";
import {
  FINISH_STEP,
  type FinishArgs,
  type FinishRow,
  type FinishValues,
  REPORT_MANY,
  SKIP_STEP,
  type SkipRow,
} from "../sql/report.js";
import { runStatement } from "../statement.js";
import { retryTransient } from "../transient.js";
import { optionalJson, requireInt, requireOneOf, requireText, requireUuid } from "../validate.js";
import { type ClaimedStep, type ClaimRouting, checkRouting, claimedStep } from "./claim.js";

/**
 * The step a report is about, and what the reporting worker believes about
 * it: that it holds it (`workerId`) in the claim it made (`attempt`, the
 * `attempts` value its claim returned). Give both (the guard): when the row
 * says otherwise (the step was rescued and claimed again, or it is someone
 * else's), the report is refused and nothing is written, so a late or
 * foreign report never overwrites the real outcome. Without a guard (the
 * Strøm server finishing a step no worker runs), a `ready` step is accepted
 * as well as a `running` one; with any part of the guard, only `running`.
 */
export interface StepRef {
  jobId: string;
  stepName: string;
  workerId?: string;
  attempt?: number;
}

/** The guard part of a `StepRef`. */
export type StepGuard = Pick<StepRef, "workerId" | "attempt">;

/** What a report did. */
export interface ReportResult extends AdvanceResult {
  /**
   * The step already held this worker's same outcome for this attempt (a
   * retried call whose first reply was lost): nothing was written, and
   * `promoted` / `skipped` are empty (the first call did that work).
   */
  repeated: boolean;
  /**
   * A failure with retries left (the step's `maxRetries`): the step went back
   * to `ready`, to run again at `retryAt`; nothing was skipped and the job
   * keeps running. False for every other report.
   */
  retried: boolean;
  /** With `retried`: when the step may be claimed again (`ready_at`). */
  retryAt?: Date;
}

/** One report of `reportMany`. */
export interface StepReport extends StepRef {
  outcome: "completed" | "failed";
  /** With `completed`: the step's output (any JSON value). */
  output?: unknown;
  /** With `failed`: the error message. */
  error?: string;
}

/** `reportMany`'s answer for one report: what it did, or why it was refused (nothing written for it). */
export type ReportOutcome = ({ ok: true } & ReportResult) | { ok: false; error: StroemDbError };

/** Most reports one `reportMany` call takes. */
export const MAX_REPORT_BATCH = 10_000;

const OUTCOMES = ["completed", "failed"] as const;

function checkReport(r: StepReport, at: string): FinishArgs {
  if (typeof r !== "object" || r === null) throw new InvalidInputError(at, "must be an object");
  const outcome = requireOneOf(`${at}.outcome`, r.outcome, OUTCOMES);
  if (outcome === "failed" && typeof r.error !== "string") {
    throw new InvalidInputError(`${at}.error`, "must be a string");
  }
  const output = outcome === "completed" ? optionalJson(`${at}.output`, r.output) : null;
  return {
    jobId: requireUuid(`${at}.jobId`, r.jobId),
    stepName: requireText(`${at}.stepName`, r.stepName),
    outcome,
    output,
    error: outcome === "failed" ? (r.error as string) : null,
    workerId: r.workerId === undefined ? null : requireUuid(`${at}.workerId`, r.workerId),
    attempt: r.attempt === undefined ? null : requireInt(`${at}.attempt`, r.attempt, 1, 2 ** 31 - 1),
  };
}

/** The typed error for a refused report, or the result of an accepted one. */
function toOutcome(a: FinishArgs, row: FinishRow): ReportOutcome {
  switch (row.result) {
    case "ok":
    case "repeated":
      return {
        ok: true,
        promoted: row.promoted ?? [],
        skipped: row.skipped ?? [],
        jobStatus: row.job_status as JobStatus,
        repeated: row.result === "repeated",
        retried: row.retried === true,
        ...(row.retried && row.retry_at ? { retryAt: new Date(row.retry_at) } : {}),
      };
    case "not_found":
      return { ok: false, error: new StepNotFoundError(a.jobId, a.stepName) };
    case "invalid_transition":
      return {
        ok: false,
        error: new InvalidTransitionError("step", a.jobId, a.stepName, row.step_status ?? "?", a.outcome),
      };
    case "not_owner":
      return {
        ok: false,
        error: new StepOwnershipError(
          a.jobId,
          a.stepName,
          { workerId: a.workerId ?? undefined, attempt: a.attempt ?? undefined },
          { workerId: row.step_worker_id, attempt: row.step_attempts ?? 0 },
          row.step_status ?? undefined,
        ),
      };
  }
}

/** An accepted report's result; a refused one's typed error is thrown. */
function accepted(a: FinishArgs, row: FinishRow): ReportResult {
  const outcome = toOutcome(a, row);
  if (!outcome.ok) throw outcome.error;
  const { ok: _, ...result } = outcome;
  return result;
}

async function finish(db: Executor, a: FinishArgs, propagate: boolean): Promise<ReportResult> {
  const output = a.output === null ? null : JSON.stringify(a.output);
  // Guarded, a repeat of a report that committed is answered `repeated`: retry any transient error.
  const rows = await retryTransient(db, a.workerId !== null && a.attempt !== null, () =>
    translateErrors(db, () => runStatement<FinishRow, FinishValues>(db, FINISH_STEP, { ...a, output, propagate })),
  );
  return accepted(a, rows[0] as FinishRow);
}

/**
 * A worker's report of success, in one round trip: records the running
 * step's output and `completed_at`, then advances its job (promotes the
 * dependants it unblocks, skips what can no longer run, settles the job).
 * Locks the job row, then the step and its dependants; costs O(dependants),
 * whatever the job's size. Returns what it promoted and skipped and the job's
 * status. A repeated report (same worker, attempt and outcome, already
 * recorded) succeeds with `repeated: true` and changes nothing. Throws, having
 * written nothing: `InvalidInputError`, `StepNotFoundError`,
 * `InvalidTransitionError` (the step is not running, or, without a guard,
 * neither running nor ready), `StepOwnershipError`
 * (the guard does not match). A finished job (cancelled, say) records the
 * outcome but does not move. A transient error (`isTransient`: a lost
 * connection, a server restarting, a deadlock) is retried up to 6 tries in
 * about 3 s (`REPORT_RETRY`); without a guard only when it proves nothing
 * was committed (a repeat would be refused), and never inside a transaction.
 */
export async function complete(db: Executor, ref: StepRef, output?: unknown): Promise<ReportResult> {
  return finish(db, checkReport({ ...ref, outcome: "completed", output }, "ref"), true);
}

/**
 * A worker's report of failure with its error message; otherwise as
 * `complete`. When the step was running and has retries left (attempt <=
 * `maxRetries`, its job not finished), the step goes back to `ready` with
 * `ready_at = now() + delay` (`retryDelaySecs` in @stroem/orchestrator) and
 * `{ attempt, workerId, error, startedAt, failedAt }` appended to its
 * `retryHistory`; the result says `retried: true` and `retryAt`. A repeated
 * guarded fail of an attempt already retried is `repeated`.
 */
export async function fail(db: Executor, ref: StepRef, error: string): Promise<ReportResult> {
  return finish(db, checkReport({ ...ref, outcome: "failed", error }, "ref"), true);
}

/**
 * Any number of reports (up to 10,000, across jobs) in one round trip, one
 * outcome per report in the given order. A refused report (not found, not
 * running, not this worker's) is answered `{ ok: false, error }` and does not
 * spoil the others. Jobs are locked children first (deeper jobs before
 * their parents: a child's end locks its parent next), then in job id
 * order, so concurrent batches cannot deadlock, with each other or with a
 * child's end. Bad input throws `InvalidInputError` before anything is
 * written. Transient errors are retried as for `complete` (any of them when
 * every report is guarded).
 */
export async function reportMany(db: Executor, reports: readonly StepReport[]): Promise<ReportOutcome[]> {
  if (!Array.isArray(reports)) throw new InvalidInputError("reports", "must be an array");
  if (reports.length > MAX_REPORT_BATCH) {
    throw new InvalidInputError("reports", `must hold at most ${MAX_REPORT_BATCH} reports, got ${reports.length}`);
  }
  if (reports.length === 0) return [];
  const args = reports.map((r, i) => checkReport(r, `reports[${i}]`));
  const json = JSON.stringify(
    args.map((a, i) => ({
      i,
      job_id: a.jobId,
      step_name: a.stepName,
      outcome: a.outcome,
      output: a.output,
      error: a.error,
      worker_id: a.workerId,
      attempt: a.attempt,
    })),
  );
  const guarded = args.every((a) => a.workerId !== null && a.attempt !== null);
  const rows = await retryTransient(db, guarded, () =>
    translateErrors(db, () =>
      runStatement<FinishRow & { ord: number }, { reports: string }>(db, REPORT_MANY, { reports: json }),
    ),
  );
  const out = new Array<ReportOutcome>(args.length);
  for (const row of rows) out[row.ord] = toOutcome(args[row.ord] as FinishArgs, row);
  return out;
}

/**
 * Records a running step's success without advancing its job (a bare mark),
 * for callers that compose it with other writes and `JobRepo.advance` in one
 * transaction; `complete` does both in one call. Same guard and errors as
 * `complete`; a repeated guarded mark is a no-op.
 */
export async function markCompleted(
  db: Executor,
  jobId: string,
  stepName: string,
  output?: unknown,
  guard?: StepGuard,
): Promise<void> {
  await finish(db, checkReport({ jobId, stepName, ...guard, outcome: "completed", output }, "ref"), false);
}

/** Records a running step's failure without advancing its job; as `markCompleted`. */
export async function markFailed(
  db: Executor,
  jobId: string,
  stepName: string,
  error: string,
  guard?: StepGuard,
): Promise<void> {
  await finish(db, checkReport({ jobId, stepName, ...guard, outcome: "failed", error }, "ref"), false);
}

/**
 * Skips a step that has not started (`pending | ready -> skipped`, with
 * `completed_at`), then advances its job as a report would: its dependants
 * see a skipped dependency (a step whose dependencies were all skipped is
 * skipped too; a `continueOnFailure` step runs). For the Strøm server (a
 * condition that ruled the step out). Locks the job row, then the step.
 * Returns what the advance promoted and skipped (not the step itself) and
 * the job's status; a finished job records the skip but does not move.
 * Throws, having written nothing: `InvalidInputError`, `StepNotFoundError`,
 * `InvalidTransitionError` (the step is running or terminal).
 */
export async function markSkipped(db: Executor, jobId: string, stepName: string): Promise<AdvanceResult> {
  requireUuid("jobId", jobId);
  requireText("stepName", stepName);
  const rows = await translateErrors(db, () =>
    runStatement<SkipRow, { jobId: string; stepName: string }>(db, SKIP_STEP, { jobId, stepName }),
  );
  const row = rows[0] as SkipRow;
  if (row.result === "not_found") throw new StepNotFoundError(jobId, stepName);
  if (row.result === "invalid_transition") {
    throw new InvalidTransitionError("step", jobId, stepName, row.step_status ?? "?", "skipped");
  }
  return { promoted: row.promoted ?? [], skipped: row.skipped ?? [], jobStatus: row.job_status as JobStatus };
}

/**
 * A worker stops a step whose cancel was requested (its job was cancelled;
 * `WorkerRepo.heartbeat` said so): `running -> cancelled` with
 * `completed_at`. Guarded like a report (`ref.workerId` / `ref.attempt`);
 * repeating it is a no-op. Locks the job row, then the step; nothing
 * advances (the job is finished). Throws, having written nothing:
 * `InvalidInputError`, `StepNotFoundError`, `InvalidTransitionError` (not
 * running, or no cancel requested), `StepOwnershipError`.
 */
export async function markCancelled(db: Executor, ref: StepRef): Promise<{ repeated: boolean }> {
  if (typeof ref !== "object" || ref === null) throw new InvalidInputError("ref", "must be an object");
  const jobId = requireUuid("ref.jobId", ref.jobId);
  const stepName = requireText("ref.stepName", ref.stepName);
  const workerId = ref.workerId === undefined ? null : requireUuid("ref.workerId", ref.workerId);
  const attempt = ref.attempt === undefined ? null : requireInt("ref.attempt", ref.attempt, 1, 2 ** 31 - 1);
  // Repeating it is a no-op answered `repeated`: retry any transient error.
  const rows = await retryTransient(db, true, () =>
    translateErrors(db, () =>
      runStatement<CancelStepRow, { jobId: string; stepName: string; workerId: string | null; attempt: number | null }>(
        db,
        CANCEL_STEP,
        { jobId, stepName, workerId, attempt },
      ),
    ),
  );
  const row = rows[0] as CancelStepRow;
  switch (row.result) {
    case "ok":
    case "repeated":
      return { repeated: row.result === "repeated" };
    case "not_found":
      throw new StepNotFoundError(jobId, stepName);
    case "invalid_transition":
      throw new InvalidTransitionError("step", jobId, stepName, row.step_status ?? "?", "cancelled");
    case "not_owner":
      throw new StepOwnershipError(
        jobId,
        stepName,
        { workerId: workerId ?? undefined, attempt: attempt ?? undefined },
        { workerId: row.step_worker_id, attempt: row.step_attempts ?? 0 },
        row.step_status ?? undefined,
      );
  }
}

/** What `reportAndClaim` did: the report's result, and the step it claimed next (if one was ready). */
export interface ReportAndClaimResult {
  report: ReportResult;
  /** The next step claimed, with the outputs of its dependencies (`ClaimedStep`). */
  next: ClaimedStep | undefined;
}

/**
 * A worker's report and its next claim in one round trip (one statement, one
 * commit): records `report` as `complete` / `fail` do (same guard, same
 * advance, same idempotence), then, when it was accepted, claims the oldest
 * ready step the worker may take (`worker`: its capabilities, or its
 * `ClaimRouting` with tags) as `claimReadyStep` does. The claim sees the queue as it was when the call began: steps this
 * report promotes are left for the next claim (by this worker or another).
 * `report.workerId` is required (the claimer). A refused report throws the
 * same typed error as `complete` / `fail`, and nothing is written or claimed.
 */
export async function reportAndClaim(
  db: Executor,
  report: StepReport,
  worker: readonly string[] | ClaimRouting,
): Promise<ReportAndClaimResult> {
  const a = checkReport(report, "report");
  if (a.workerId === null) throw new InvalidInputError("report.workerId", "is required: the worker that claims next");
  const routing = checkRouting(worker);
  const output = a.output === null ? null : JSON.stringify(a.output);
  const { statement, values } = preparedReportAndClaim(routing, { ...a, output, propagate: true });
  // Retried only when the error proves nothing committed: a repeat of a call
  // that did commit would claim a second step (the first held by nobody).
  const rows = await retryTransient(db, false, () =>
    translateErrors(db, () => runStatement<FinishRow & Record<string, unknown>, typeof values>(db, statement, values)),
  );
  const row = rows[0] as FinishRow & Record<string, unknown>;
  return { report: accepted(a, row), next: row.job_id == null ? undefined : claimedStep(row) };
}
