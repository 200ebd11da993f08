import {
  type JobStep,
  jobStepState,
  SERVER_ROUTES,
  STEP_STATUSES,
  STEP_TERMINAL_STATUSES,
  type StepStatus,
  stepLive,
} from "@stroem/schema";
import { and, asc, count, eq, min, notInArray, sql } from "drizzle-orm";
import { type Executor, translateErrors } from "../db.js";
import { requireUuid } from "../validate.js";

/** Every step of the job, ordered by step name; `[]` for an unknown job. */
export async function getStepsForJob(db: Executor, jobId: string): Promise<JobStep[]> {
  requireUuid("jobId", jobId);
  return translateErrors(db, () =>
    db.select().from(jobStepState).where(eq(jobStepState.jobId, jobId)).orderBy(asc(jobStepState.stepName)),
  );
}

/** The job's ready steps, oldest ready first. */
export async function getReadySteps(db: Executor, jobId: string): Promise<JobStep[]> {
  requireUuid("jobId", jobId);
  return translateErrors(db, () =>
    db
      .select()
      .from(jobStepState)
      .where(and(eq(jobStepState.jobId, jobId), eq(jobStepState.status, "ready")))
      .orderBy(asc(jobStepState.readyAt), asc(jobStepState.stepName)),
  );
}

/** True when no step of the job is pending, ready or running (also for a job without steps). */
export async function allStepsTerminal(db: Executor, jobId: string): Promise<boolean> {
  requireUuid("jobId", jobId);
  const rows = await translateErrors(db, () =>
    db
      .select({ one: sql<number>`1` })
      .from(jobStepState)
      .where(and(eq(jobStepState.jobId, jobId), notInArray(jobStepState.status, [...STEP_TERMINAL_STATUSES])))
      .limit(1),
  );
  return rows.length === 0;
}

/**
 * True when some step of the job failed, whether or not it has
 * `continueOnFailure` (whose failure does not fail the job: the job's own
 * status says whether it failed).
 */
export async function anyStepFailed(db: Executor, jobId: string): Promise<boolean> {
  requireUuid("jobId", jobId);
  const rows = await translateErrors(db, () =>
    db
      .select({ one: sql<number>`1` })
      .from(jobStepState)
      .where(and(eq(jobStepState.jobId, jobId), eq(jobStepState.status, "failed")))
      .limit(1),
  );
  return rows.length > 0;
}

export interface ReadyBacklog {
  actionType: string;
  ready: number;
  oldestReadyAt: Date | null;
}

/**
 * Ready steps by action type with the oldest `ready_at` (a read of the ready
 * rows of `step_live`, the claim index's). Steps waiting for the server's
 * decision on their `when` or for their loop's expansion are counted apart,
 * under their route (`@when`, `@loop`: `SERVER_ROUTES`), whatever their
 * action type: no worker takes them.
 */
export async function readyBacklog(db: Executor): Promise<ReadyBacklog[]> {
  // Literals, not parameters: the GROUP BY must repeat the select's expression exactly.
  const routes = sql.raw(`'${SERVER_ROUTES.condition}', '${SERVER_ROUTES.loop}'`);
  const kind = sql<string>`case when ${stepLive.route} in (${routes}) then ${stepLive.route} else ${stepLive.actionType} end`;
  return translateErrors(db, () =>
    db
      .select({ actionType: kind, ready: count(), oldestReadyAt: min(stepLive.readyAt) })
      .from(stepLive)
      .where(eq(stepLive.status, "ready"))
      .groupBy(kind)
      .orderBy(kind),
  );
}

export interface StepAudit {
  /** Steps per status, every status present. */
  byStatus: Record<StepStatus, number>;
  /** Steps claimed more than once (`attempts > 1`): rescued and claimed again. */
  claimedMoreThanOnce: number;
  /** Completed or failed steps never claimed (`attempts = 0`): none, when all went through a claim. */
  finishedUnclaimed: number;
}

/** Counts for checking a run: steps by status and claim anomalies, over all jobs or the given ones. */
export async function audit(db: Executor, jobIds?: readonly string[]): Promise<StepAudit> {
  for (const [i, id] of (jobIds ?? []).entries()) requireUuid(`jobIds[${i}]`, id);
  const filter = jobIds ? sql`${jobStepState.jobId} = any(${sql.param(jobIds)}::uuid[])` : sql`true`;
  const rows = await translateErrors(db, () =>
    db
      .select({
        status: jobStepState.status,
        n: count(),
        multi: sql<number>`count(*) filter (where ${jobStepState.attempts} > 1)`.mapWith(Number),
        unclaimed:
          sql<number>`count(*) filter (where ${jobStepState.attempts} = 0 and ${jobStepState.status} in ('completed', 'failed'))`.mapWith(
            Number,
          ),
      })
      .from(jobStepState)
      .where(filter)
      .groupBy(jobStepState.status),
  );
  const byStatus = Object.fromEntries(STEP_STATUSES.map((s) => [s, 0])) as Record<StepStatus, number>;
  let claimedMoreThanOnce = 0;
  let finishedUnclaimed = 0;
  for (const r of rows) {
    byStatus[r.status] = r.n;
    claimedMoreThanOnce += r.multi;
    finishedUnclaimed += r.unclaimed;
  }
  return { byStatus, claimedMoreThanOnce, finishedUnclaimed };
}
