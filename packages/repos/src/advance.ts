import { type Flow, flowFromEntries, planAdvance } from "@stroem/orchestrator";
import { isJobTerminal, type JobStatus, type JobStep, job, jobStep } from "@stroem/schema";
import { and, eq, sql } from "drizzle-orm";
import type { Executor } from "./db.js";
import { JobNotFoundError } from "./errors.js";

export interface AdvanceResult {
  /** Steps made ready, in topological order. */
  promoted: string[];
  /** Steps skipped because they can never run, in topological order. */
  skipped: string[];
  /** The job's status after the call. */
  jobStatus: JobStatus;
}

/**
 * The flow a job was created with, from its step rows (each row stores its
 * dependencies). Throws `FlowValidationError` on repeated names; the graph
 * itself is validated where it is used.
 */
export function storedFlow(
  steps: ReadonlyArray<Pick<JobStep, "stepName" | "actionName" | "dependsOn" | "continueOnFailure">>,
): Flow {
  return flowFromEntries(
    steps.map((s) => ({
      stepName: s.stepName,
      action: s.actionName,
      dependsOn: s.dependsOn,
      continueOnFailure: s.continueOnFailure,
    })),
  );
}

interface ApplyOptions {
  /** The flow to decide with; default: the graph stored on the job's step rows. */
  flow?: Flow;
  promote: boolean;
  skip: boolean;
  /** Also settle the job's own status (running / completed / failed); only with `promote` and `skip`. */
  updateJob?: boolean;
}

/**
 * The one place a job's steps move on. Must run inside a transaction: it
 * locks the job row (`FOR UPDATE`) first, so decisions for one job are
 * serialised, and in READ COMMITTED each later statement sees what the
 * previous holder committed. That is what keeps two workers finishing the two
 * parents of a join from each seeing the other unfinished. Every UPDATE is
 * guarded by `status = 'pending'`, so a step is promoted or skipped once.
 */
export async function applyPlan(tx: Executor, jobId: string, options: ApplyOptions): Promise<AdvanceResult> {
  const [locked] = await tx.select({ status: job.status }).from(job).where(eq(job.jobId, jobId)).for("update");
  if (!locked) throw new JobNotFoundError(jobId);
  // A cancelled (or otherwise finished) job does not move any more.
  if (isJobTerminal(locked.status)) return { promoted: [], skipped: [], jobStatus: locked.status };

  const steps = await tx
    .select({
      stepName: jobStep.stepName,
      status: jobStep.status,
      actionName: jobStep.actionName,
      dependsOn: jobStep.dependsOn,
      continueOnFailure: jobStep.continueOnFailure,
    })
    .from(jobStep)
    .where(eq(jobStep.jobId, jobId));
  if (steps.length === 0) return { promoted: [], skipped: [], jobStatus: locked.status };

  const flow = options.flow ?? storedFlow(steps);
  const plan = planAdvance(steps, flow);
  const skipped = options.skip ? await setPending(tx, jobId, plan.skip, "skipped") : [];
  const promoted = options.promote ? await setPending(tx, jobId, plan.promote, "ready") : [];

  let jobStatus = locked.status;
  if (options.updateJob) {
    if (plan.jobOutcome !== "running") {
      jobStatus = plan.jobOutcome;
      await tx
        .update(job)
        .set({
          status: jobStatus,
          completedAt: sql`now()`,
          startedAt: sql`coalesce(${job.startedAt}, ${firstStepStart(jobId)}, now())`,
        })
        .where(eq(job.jobId, jobId));
    } else if (jobStatus === "pending" && steps.some((s) => s.status !== "pending" && s.status !== "ready")) {
      // A step started (say through markRunning) without the claim's own job update.
      jobStatus = "running";
      await tx
        .update(job)
        .set({ status: "running", startedAt: sql`coalesce(${job.startedAt}, ${firstStepStart(jobId)}, now())` })
        .where(eq(job.jobId, jobId));
    }
  }
  return { promoted, skipped, jobStatus };
}

function firstStepStart(jobId: string) {
  return sql`(select min(${jobStep.startedAt}) from ${jobStep} where ${jobStep.jobId} = ${jobId})`;
}

/** One batched UPDATE of pending steps; returns the names it changed, in the given order. */
async function setPending(tx: Executor, jobId: string, names: string[], to: "ready" | "skipped"): Promise<string[]> {
  if (names.length === 0) return [];
  const changed = await tx
    .update(jobStep)
    .set(to === "ready" ? { status: "ready", readyAt: sql`now()` } : { status: "skipped", completedAt: sql`now()` })
    .where(
      and(
        eq(jobStep.jobId, jobId),
        eq(jobStep.status, "pending"),
        sql`${jobStep.stepName} = any(${sql.param(names)}::text[])`,
      ),
    )
    .returning({ stepName: jobStep.stepName });
  const done = new Set(changed.map((r) => r.stepName));
  return names.filter((n) => done.has(n));
}
