import { planAdvance, toFlow } from "@stroem/orchestrator";
import { type Database, JobRepo, JobStepRepo } from "@stroem/repos";
import type { JobStatus } from "@stroem/schema";
import { duration, table } from "../format.js";
import { renderText } from "../graph.js";
import type { WorkerStats } from "./workers.js";

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
  wallMs: number;
}

/**
 * The closing report, read back from the database: the summary table, the
 * first failed job's DAG, and the checks (every job terminal, no step claimed
 * twice, every outcome what the orchestrator would decide). Stops between
 * queries when `signal` aborts, throwing its reason.
 */
export async function report(
  db: Database,
  jobIds: readonly string[],
  worked: { stats: WorkerStats; wallMs: number },
  say: (line?: string) => void,
  signal?: AbortSignal,
): Promise<DemoReport> {
  const { stats, wallMs } = worked;
  const jobIndex = new Map(jobIds.map((id, i) => [id, i]));
  const jobs = await JobRepo.countByStatus(db);
  const audit = await JobStepRepo.audit(db, jobIds);
  signal?.throwIfAborted();
  say();
  say(
    table(
      ["summary", ""],
      [
        ["jobs completed", jobs.completed],
        ["jobs failed", jobs.failed],
        ["steps completed", audit.byStatus.completed],
        ["steps failed", audit.byStatus.failed],
        ["steps skipped", audit.byStatus.skipped],
        ["wall time", duration(wallMs)],
        ["throughput", `${(stats.executed / (wallMs / 1000)).toFixed(1)} steps/s`],
      ],
    ),
  );

  const firstFailed = (await JobRepo.list(db, { workspace: "demo", status: "failed", limit: 1000, offset: 0 })).sort(
    (a, b) => (jobIndex.get(a.jobId) ?? 0) - (jobIndex.get(b.jobId) ?? 0),
  )[0];
  if (firstFailed) {
    const steps = await JobStepRepo.getStepsForJob(db, firstFailed.jobId);
    signal?.throwIfAborted();
    say();
    say(`A failed job, ${firstFailed.jobId} (#${jobIndex.get(firstFailed.jobId)}):`);
    say(renderText(steps));
  }

  const checks: DemoCheck[] = [];
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
  const terminal = jobs.completed + jobs.failed;
  check(
    "every job is terminal",
    terminal === jobIds.length && jobs.pending + jobs.running === 0,
    `${terminal}/${jobIds.length}`,
  );
  const open = audit.byStatus.pending + audit.byStatus.ready + audit.byStatus.running;
  check("no step left pending, ready or running", open === 0, `${open} open`);
  check(
    "no step was claimed twice",
    audit.claimedMoreThanOnce === 0,
    `${audit.claimedMoreThanOnce} claimed more than once`,
  );
  check(
    "every finished step went through a claim",
    audit.finishedUnclaimed === 0,
    `${audit.finishedUnclaimed} unclaimed`,
  );
  const recorded = audit.byStatus.completed + audit.byStatus.failed;
  check(
    "each executed step was recorded exactly once",
    recorded === stats.executed,
    `${stats.executed} executed, ${recorded} recorded`,
  );
  let mismatched = 0;
  for (const jobId of jobIds) {
    signal?.throwIfAborted();
    const [row, steps] = await Promise.all([JobRepo.get(db, jobId), JobStepRepo.getStepsForJob(db, jobId)]);
    const plan = planAdvance(steps, toFlow(steps));
    if (plan.jobStatus !== row?.status || plan.promote.length || plan.skip.length) mismatched++;
  }
  check("job outcomes follow the orchestrator's rules", mismatched === 0, `${mismatched} mismatched`);
  say();
  say("Checks:");
  for (const c of checks) say(`  ${c.ok ? "✔" : "✘"} ${c.name} (${c.detail})`);
  return { ok: checks.every((c) => c.ok), checks, jobs, steps: audit.byStatus, wallMs };
}
