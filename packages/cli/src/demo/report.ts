import { planAdvance, toFlow } from "@stroem/orchestrator";
import { type Database, JobRepo, JobStepRepo } from "@stroem/repos";
import {
  isServerActionType,
  isStepTerminal,
  JOB_STATUSES,
  type Job,
  type JobStatus,
  type JobStep,
  type StepStatus,
} from "@stroem/schema";
import { duration, table } from "../format.js";
import { renderText } from "../graph.js";
import type { CancelReport, Run, WorkerStats } from "./workers.js";

export interface DemoCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DemoReport {
  ok: boolean;
  checks: DemoCheck[];
  jobs: Record<JobStatus, number>;
  steps: Record<string, number>;
  /** Steps retried at least once; of those, how many then completed, and how many failed out of retries. */
  retries: { retried: number; recovered: number; exhausted: number };
  /** The job the demo cancelled and how its steps ended, by step name. */
  cancelled?: { jobId: string; index: number; reason: string; steps: Record<string, StepStatus> };
  wallMs: number;
}

/**
 * The closing report, read back from the database: the summary table (with
 * retries and the cancelled job), the first failed job's DAG, and the checks
 * (every job terminal, exactly the one cancelled; attempts within each step's
 * retry policy and recorded in its `retry_history`; each run recorded once,
 * per attempt; the cancelled job stopped; every other outcome what the
 * orchestrator would decide). Stops between queries when `signal` aborts,
 * throwing its reason.
 */
export async function report(
  db: Database,
  jobIds: readonly string[],
  worked: { stats: WorkerStats; runs: readonly Run[]; cancel?: CancelReport; wallMs: number },
  say: (line?: string) => void,
  signal?: AbortSignal,
): Promise<DemoReport> {
  const { stats, runs, cancel, wallMs } = worked;
  const jobIndex = new Map(jobIds.map((id, i) => [id, i]));
  // The demo's jobs and the child jobs their smoke tests started.
  const children = (await Promise.all(jobIds.map((id) => JobRepo.children(db, id)))).flat();
  const everyJob = [...jobIds, ...children.map((c) => c.jobId)];
  const audit = await JobStepRepo.audit(db, everyJob);
  signal?.throwIfAborted();
  const jobs = Object.fromEntries(JOB_STATUSES.map((st) => [st, 0])) as Record<JobStatus, number>;
  const childJobs = Object.fromEntries(JOB_STATUSES.map((st) => [st, 0])) as Record<JobStatus, number>;
  let unclaimed = 0;
  let loops = 0;
  let loopsWrong = 0;
  let childrenWrong = 0;
  const parentSteps = new Map<string, JobStep>();

  // One pass over every job and its steps.
  const runKey = (jobId: string, stepName: string, attempt: number, workerId: string | null, outcome: string) =>
    `${jobId}|${stepName}|${attempt}|${workerId}|${outcome}`;
  const recorded = new Set<string>();
  let recordedCount = 0;
  let mismatched = 0;
  let overLimit = 0;
  let historyEntries = 0;
  let historyMismatched = 0;
  const retries = { retried: 0, recovered: 0, exhausted: 0 };
  let cancelledRow: Job | undefined;
  let cancelledSteps: JobStep[] = [];
  for (const jobId of everyJob) {
    signal?.throwIfAborted();
    const [row, steps] = await Promise.all([JobRepo.get(db, jobId), JobStepRepo.getStepsForJob(db, jobId)]);
    if (row) (jobIndex.has(jobId) ? jobs : childJobs)[row.status]++;
    for (const st of steps) {
      // Only the server's steps (a gate, a loop, a task) finish without a claim.
      const server = isServerActionType(st.actionType) || st.forEach !== null;
      if (!server && st.attempts === 0 && (st.status === "completed" || st.status === "failed")) unclaimed++;
      if (st.actionType === "task") parentSteps.set(`${jobId}|${st.stepName}`, st);
      if (st.forEach !== null && st.loopTotal !== null) {
        // A loop ends with its instances: completed with their outputs in order, else failed.
        loops++;
        const instances = steps
          .filter((i) => i.loopSource === st.stepName)
          .sort((a, b) => (a.loopIndex ?? 0) - (b.loopIndex ?? 0));
        const allDone = instances.every((i) => i.status === "completed");
        const ok =
          instances.length === st.loopTotal &&
          (st.status === "cancelled" ||
            (allDone
              ? st.status === "completed" &&
                JSON.stringify(st.output) === JSON.stringify(instances.map((i) => i.output))
              : st.status === "failed"));
        if (!ok) loopsWrong++;
      }
      if (st.attempts > st.maxRetries + 1) overLimit++;
      const history = st.retryHistory;
      historyEntries += history.length;
      // A step cancelled while waiting for its retry (no worker) has one entry per attempt; any other, one per
      // attempt but the last (which ended in its status).
      const waiting = st.status === "cancelled" && st.workerId === null;
      const expected = waiting ? st.attempts : Math.max(0, st.attempts - 1);
      if (history.length !== expected || history.some((h, k) => h.attempt !== k + 1)) historyMismatched++;
      for (const h of history) {
        recorded.add(runKey(jobId, st.stepName, h.attempt, h.workerId, "retried"));
        recordedCount++;
      }
      if (
        !server &&
        (st.status === "completed" || st.status === "failed" || (st.status === "cancelled" && st.workerId !== null))
      ) {
        recorded.add(runKey(jobId, st.stepName, st.attempts, st.workerId, st.status));
        recordedCount++;
      }
      if (history.length > 0) {
        retries.retried++;
        if (st.status === "completed") retries.recovered++;
        if (st.status === "failed" && st.attempts === st.maxRetries + 1) retries.exhausted++;
      }
    }
    if (jobId === cancel?.jobId) {
      cancelledRow = row;
      cancelledSteps = steps;
      continue;
    }
    const plan = planAdvance(steps, toFlow(steps));
    if (plan.jobStatus !== row?.status || plan.promote.length || plan.skip.length) mismatched++;
  }

  for (const c of children) {
    const parent = parentSteps.get(`${c.parentJobId}|${c.parentStepName}`);
    const child = await JobRepo.get(db, c.jobId);
    const expected = child?.status === "completed" ? "completed" : "failed";
    if (!parent || parent.status !== expected || (parent.output as { childJobId?: string })?.childJobId !== c.jobId) {
      childrenWrong++;
    }
  }

  say();
  say(
    table(
      ["summary", ""],
      [
        ["jobs completed", jobs.completed],
        ["jobs failed", jobs.failed],
        ["jobs cancelled", jobs.cancelled],
        ["steps completed", audit.byStatus.completed],
        ["steps failed", audit.byStatus.failed],
        ["steps skipped", audit.byStatus.skipped],
        ["steps cancelled", audit.byStatus.cancelled],
        ["steps retried", retries.retried],
        ["  then completed", retries.recovered],
        ["  out of retries", retries.exhausted],
        ["gates approved", stats.approved],
        ["loops expanded", stats.loops],
        ["  instances", stats.instances],
        ["child jobs", children.length],
        ["  completed", childJobs.completed],
        ["  failed", childJobs.failed],
        ["wall time", duration(wallMs)],
        ["throughput", `${(stats.executed / (wallMs / 1000)).toFixed(1)} runs/s`],
      ],
    ),
  );

  if (cancel && cancelledRow) {
    const asked = cancel.result.cancelRequested;
    const fates = asked.map((name) => {
      const late = cancel.late.find((l) => l.stepName === name);
      return cancel.stopped.includes(name)
        ? `${name} stopped by its worker (heartbeat, then markCancelled)`
        : late
          ? `${name}'s late outcome (${late.outcome}) recorded, promoting nothing`
          : `${name} ${cancelledSteps.find((st) => st.stepName === name)?.status ?? "?"}`;
    });
    say();
    say(`Cancelled job ${cancel.jobId} (#${jobIndex.get(cancel.jobId)}): "${cancelledRow.cancelReason ?? ""}".`);
    say(
      `  ${cancel.result.cancelled.length} steps cancelled at once; ${asked.length} running asked to stop${fates.length ? `: ${fates.join("; ")}` : ""}.`,
    );
  }

  const firstFailed = (await JobRepo.list(db, { workspace: "demo", status: "failed", limit: 1000, offset: 0 }))
    .filter((j) => jobIndex.has(j.jobId))
    .sort((a, b) => (jobIndex.get(a.jobId) ?? 0) - (jobIndex.get(b.jobId) ?? 0))[0];
  if (firstFailed) {
    const steps = await JobStepRepo.getStepsForJob(db, firstFailed.jobId);
    signal?.throwIfAborted();
    say();
    say(`A failed job, ${firstFailed.jobId} (#${jobIndex.get(firstFailed.jobId)}):`);
    say(renderText(steps));
  }

  const checks: DemoCheck[] = [];
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
  const terminal = jobs.completed + jobs.failed + jobs.cancelled;
  check(
    "every job is terminal",
    terminal === jobIds.length && jobs.pending + jobs.running === 0 && jobs.cancelled === (cancel ? 1 : 0),
    `${terminal}/${jobIds.length}, ${jobs.cancelled} cancelled`,
  );
  const open = audit.byStatus.pending + audit.byStatus.ready + audit.byStatus.running + audit.byStatus.suspended;
  check("no step left pending, ready, running or suspended", open === 0, `${open} open`);
  check(
    "no step was claimed more than its retry policy allows",
    overLimit === 0,
    `${audit.claimedMoreThanOnce} claimed again, ${overLimit} over maxRetries + 1`,
  );
  check(
    "every retry is in its step's retry_history",
    historyMismatched === 0,
    `${historyEntries} entries, ${historyMismatched} steps mismatched`,
  );
  check("every finished worker step went through a claim", unclaimed === 0, `${unclaimed} unclaimed`);
  check("every loop ended with its instances", loopsWrong === 0, `${loops} loops, ${loopsWrong} wrong`);
  check(
    "every child job ended its parent step, once",
    childrenWrong === 0 && children.every((c) => c.status === "completed" || c.status === "failed"),
    `${children.length} children, ${childrenWrong} wrong`,
  );
  const executed = new Set(runs.map((r) => runKey(r.jobId, r.stepName, r.attempt, r.workerId, r.outcome)));
  const sameRuns =
    executed.size === runs.length &&
    recorded.size === recordedCount &&
    runs.length === stats.executed &&
    executed.size === recorded.size &&
    [...executed].every((k) => recorded.has(k));
  check(
    "each executed step was recorded exactly once",
    sameRuns,
    `${stats.executed} executions, ${recordedCount} recorded, per attempt`,
  );
  if (cancel) {
    const at = cancelledRow?.completedAt?.getTime() ?? Number.NEGATIVE_INFINITY;
    const after = cancelledSteps.filter(
      (st) => (st.readyAt?.getTime() ?? 0) > at || (st.startedAt?.getTime() ?? 0) > at,
    ).length;
    const asked = cancelledSteps.filter((st) => st.cancelRequestedAt !== null).map((st) => st.stepName);
    const stillOpen = cancelledSteps.filter((st) => !isStepTerminal(st.status)).length;
    const moved = cancel.late.filter((l) => l.promoted > 0 || l.outcome === "retried").length;
    check(
      "the cancelled job stopped, nothing promoted after its cancel",
      cancelledRow?.status === "cancelled" &&
        cancelledRow.cancelReason === cancel.reason &&
        stillOpen === 0 &&
        after + moved === 0 &&
        asked.join() === [...cancel.result.cancelRequested].sort().join(),
      `#${jobIndex.get(cancel.jobId)} ${cancelledRow?.status}, ${stillOpen} steps open, ${after + moved} promoted or retried after`,
    );
  }
  check(
    "job outcomes follow the orchestrator's rules",
    mismatched === 0,
    `${mismatched} mismatched${cancel ? ", the cancelled job aside" : ""}`,
  );
  say();
  say("Checks:");
  for (const c of checks) say(`  ${c.ok ? "✔" : "✘"} ${c.name} (${c.detail})`);
  return {
    ok: checks.every((c) => c.ok),
    checks,
    jobs,
    steps: audit.byStatus,
    retries,
    cancelled:
      cancel && cancelledRow
        ? {
            jobId: cancel.jobId,
            index: jobIndex.get(cancel.jobId) ?? -1,
            reason: cancel.reason,
            steps: Object.fromEntries(cancelledSteps.map((st) => [st.stepName, st.status])),
          }
        : undefined,
    wallMs,
  };
}
