import { toFlow, validateFlow } from "@stroem/orchestrator";
import type { Job, JobStep, StepStatus } from "@stroem/schema";
import { age, duration, table } from "./format.js";

const SYMBOL: Record<StepStatus, string> = {
  pending: "·",
  ready: "○",
  running: "▶",
  suspended: "⏸",
  completed: "✔",
  failed: "✘",
  skipped: "⊘",
  cancelled: "⊗",
};

type GraphStep = Pick<
  JobStep,
  "stepName" | "status" | "dependsOn" | "continueOnFailure" | "actionName" | "actionType" | "errorMessage"
> &
  Partial<Pick<JobStep, "loopSource" | "loopIndex" | "loopItem">>;

/** The steps in topological order (the stored graph), falling back to name order if it is broken. */
function ordered<T extends GraphStep>(steps: readonly T[]): T[] {
  const byName = new Map(steps.map((s) => [s.stepName, s]));
  try {
    return validateFlow(toFlow(steps)).map((n) => byName.get(n) as T);
  } catch {
    return [...steps].sort((a, b) => a.stepName.localeCompare(b.stepName));
  }
}

/** Depth of each step: 0 for roots, else one more than its deepest dependency. */
function depths(steps: readonly GraphStep[]): Map<string, number> {
  const depth = new Map<string, number>();
  for (const s of steps) {
    depth.set(s.stepName, Math.max(-1, ...s.dependsOn.map((d) => depth.get(d) ?? 0)) + 1);
  }
  return depth;
}

/**
 * A job's DAG as terminal text: one line per step in run order, indented by
 * depth; a loop's instances (`expandLoop`) right under their loop step, one
 * level deeper, with their item.
 */
export function renderText(steps: readonly GraphStep[]): string {
  const instances = new Map<string, GraphStep[]>();
  for (const s of steps) {
    if (s.loopSource) instances.set(s.loopSource, [...(instances.get(s.loopSource) ?? []), s]);
  }
  const order = ordered(steps.filter((s) => !s.loopSource));
  const depth = depths(order);
  const rows: Array<{ s: GraphStep; depth: number; note: string }> = [];
  for (const s of order) {
    const d = depth.get(s.stepName) ?? 0;
    rows.push({ s, depth: d, note: s.dependsOn.length ? `  ← ${s.dependsOn.join(", ")}` : "" });
    const mine = (instances.get(s.stepName) ?? []).sort((a, b) => (a.loopIndex ?? 0) - (b.loopIndex ?? 0));
    for (const i of mine) rows.push({ s: i, depth: d + 1, note: `  item ${JSON.stringify(i.loopItem ?? null)}` });
  }
  const width = Math.max(...rows.map((r) => r.s.stepName.length + 2 * r.depth));
  return rows
    .map(({ s, depth: d, note }) => {
      const name = `${"  ".repeat(d)}${s.stepName}`.padEnd(width);
      const error = s.status === "failed" && s.errorMessage ? `  (${s.errorMessage})` : "";
      return `  ${SYMBOL[s.status] ?? "?"} ${s.status.padEnd(9)} ${name}  ${`[${s.actionType}]`.padEnd(8)}${note}${error}`.trimEnd();
    })
    .join("\n");
}

const STYLE: Record<StepStatus, string> = {
  pending: "fill:#f5f5f5,stroke:#999",
  ready: "fill:#e7f1ff,stroke:#0d6efd",
  running: "fill:#fff3cd,stroke:#ffc107",
  suspended: "fill:#fde2c8,stroke:#fd7e14",
  completed: "fill:#d1e7dd,stroke:#198754",
  failed: "fill:#f8d7da,stroke:#dc3545",
  skipped: "fill:#eeeeee,stroke:#6c757d,stroke-dasharray:4",
  cancelled: "fill:#eeeeee,stroke:#212529,stroke-dasharray:2",
};

/** Mermaid flowchart of the DAG, ready to paste into Markdown. Labels are escaped; node ids are generated. */
export function renderMermaid(steps: readonly GraphStep[]): string {
  const order = ordered(steps);
  const id = new Map(order.map((s, i) => [s.stepName, `s${i}`]));
  const esc = (t: string) =>
    t.replace(/&/g, "#amp;").replace(/"/g, "#quot;").replace(/</g, "#lt;").replace(/>/g, "#gt;");
  const lines = ["flowchart LR"];
  for (const s of order)
    lines.push(`  ${id.get(s.stepName)}["${esc(s.stepName)}<br/><i>${s.status}</i>"]:::${s.status}`);
  for (const s of order) {
    for (const d of s.dependsOn) if (id.has(d)) lines.push(`  ${id.get(d)} --> ${id.get(s.stepName)}`);
  }
  for (const status of new Set(order.map((s) => s.status))) lines.push(`  classDef ${status} ${STYLE[status] ?? ""}`);
  return lines.join("\n");
}

/** A worker as `graph` shows it: its name and the first 8 characters of its id (the id alone when unknown). */
function workerOf(workerId: string | null, names: ReadonlyMap<string, string>): string {
  if (!workerId) return "";
  const name = names.get(workerId);
  return name ? `${name} (${workerId.slice(0, 8)})` : workerId;
}

const ms = (from: Date, to: Date) => Math.max(0, to.getTime() - from.getTime());

/** The job's times: created, started, finished, and how long it ran (or has been running). */
export function renderJobTimes(
  job: Pick<Job, "createdAt" | "startedAt" | "completedAt" | "status">,
  now: Date,
): string {
  const parts = [`created ${job.createdAt.toISOString()}`];
  if (job.startedAt) parts.push(`started ${job.startedAt.toISOString()}`);
  if (job.completedAt) parts.push(`finished ${job.completedAt.toISOString()}`);
  if (job.startedAt && job.completedAt) parts.push(`(ran ${duration(ms(job.startedAt, job.completedAt))})`);
  else if (job.startedAt) parts.push(`(running for ${age(job.startedAt, now)})`);
  return parts.join("  ");
}

type DetailStep = GraphStep &
  Pick<
    JobStep,
    | "attempts"
    | "maxRetries"
    | "rescues"
    | "workerId"
    | "startedAt"
    | "completedAt"
    | "cancelRequestedAt"
    | "retryHistory"
  >;

/** A step's time: `running 1m2s` (and a pending cancel), `ran 1.2s`, or nothing before it started. */
function stepTime(s: DetailStep, now: Date): string {
  if (!s.startedAt) return "";
  if (s.status === "running")
    return `running ${age(s.startedAt, now)}${s.cancelRequestedAt ? " (cancel requested)" : ""}`;
  if (s.completedAt && s.completedAt >= s.startedAt) return `ran ${duration(ms(s.startedAt, s.completedAt))}`;
  return "";
}

/**
 * One row per step in run order: its status, its attempt out of the attempts
 * its policy allows (`maxRetries + 1`; a free rescue raises both), its
 * rescues, the worker that holds or last ran it, and its time.
 */
export function renderStepTable(steps: readonly DetailStep[], workers: ReadonlyMap<string, string>, now: Date): string {
  return table(
    ["step", "status", "attempt", "rescues", "worker", "time"],
    ordered(steps).map((s) => [
      s.stepName,
      s.status,
      `${s.attempts}/${s.maxRetries + 1}`,
      s.rescues,
      workerOf(s.workerId, workers),
      stepTime(s, now),
    ]),
    "llrrll",
  );
}

/** Each step's retry history (failed attempts that were retried, rescues included), oldest first; "" when none. */
export function renderRetries(steps: readonly DetailStep[], workers: ReadonlyMap<string, string>): string {
  const lines: string[] = [];
  for (const s of ordered(steps)) {
    for (const h of s.retryHistory) {
      const worker = h.workerId ? ` on ${workerOf(h.workerId, workers)}` : "";
      const started = h.startedAt ? Date.parse(h.startedAt) : Number.NaN;
      const failed = Date.parse(h.failedAt);
      const at = Number.isNaN(failed) ? h.failedAt : new Date(failed).toISOString();
      const took =
        Number.isNaN(started) || Number.isNaN(failed) ? "" : ` after ${duration(Math.max(0, failed - started))}`;
      lines.push(`  ${s.stepName}  attempt ${h.attempt}${worker}: failed ${at}${took}: ${h.error ?? "(no error)"}`);
    }
  }
  return lines.join("\n");
}
