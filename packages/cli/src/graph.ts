import { toFlow, validateFlow } from "@stroem/orchestrator";
import type { JobStep } from "@stroem/schema";

const SYMBOL: Record<string, string> = {
  pending: "·",
  ready: "○",
  running: "▶",
  completed: "✔",
  failed: "✘",
  skipped: "⊘",
  cancelled: "⊗",
};

type GraphStep = Pick<
  JobStep,
  "stepName" | "status" | "dependsOn" | "continueOnFailure" | "actionName" | "actionType" | "errorMessage"
>;

/** The steps in topological order (the stored graph), falling back to name order if it is broken. */
function ordered(steps: readonly GraphStep[]): GraphStep[] {
  const byName = new Map(steps.map((s) => [s.stepName, s]));
  try {
    return validateFlow(toFlow(steps)).map((n) => byName.get(n) as GraphStep);
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

/** A job's DAG as terminal text: one line per step in run order, indented by depth. */
export function renderText(steps: readonly GraphStep[]): string {
  const order = ordered(steps);
  const depth = depths(order);
  const width = Math.max(...order.map((s) => s.stepName.length + 2 * (depth.get(s.stepName) ?? 0)));
  return order
    .map((s) => {
      const indent = "  ".repeat(depth.get(s.stepName) ?? 0);
      const name = `${indent}${s.stepName}`.padEnd(width);
      const deps = s.dependsOn.length ? `  ← ${s.dependsOn.join(", ")}` : "";
      const error = s.status === "failed" && s.errorMessage ? `  (${s.errorMessage})` : "";
      return `  ${SYMBOL[s.status] ?? "?"} ${s.status.padEnd(9)} ${name}  ${`[${s.actionType}]`.padEnd(8)}${deps}${error}`.trimEnd();
    })
    .join("\n");
}

const STYLE: Record<string, string> = {
  pending: "fill:#f5f5f5,stroke:#999",
  ready: "fill:#e7f1ff,stroke:#0d6efd",
  running: "fill:#fff3cd,stroke:#ffc107",
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
