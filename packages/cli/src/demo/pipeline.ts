import type { NewFlowStep } from "@stroem/repos";
import type { ActionType } from "@stroem/schema";

/** A CI/CD pipeline: checkout, three checks in parallel, package, deploy, and a notification that always runs. */
export const PIPELINE: readonly NewFlowStep[] = [
  {
    stepName: "checkout",
    actionName: "git-clone",
    actionType: "shell",
    actionSpec: { cmd: "git clone --depth 1 $REPO ." },
  },
  {
    stepName: "lint",
    actionName: "eslint",
    actionType: "shell",
    dependsOn: ["checkout"],
    actionSpec: { cmd: "npx eslint ." },
  },
  {
    stepName: "unit-tests",
    actionName: "vitest",
    actionType: "docker",
    actionImage: "node:20",
    dependsOn: ["checkout"],
    actionSpec: { cmd: "npm test" },
  },
  {
    stepName: "build",
    actionName: "npm-build",
    actionType: "docker",
    actionImage: "node:20",
    dependsOn: ["checkout"],
    actionSpec: { cmd: "npm ci && npm run build" },
  },
  {
    stepName: "package",
    actionName: "docker-build",
    actionType: "docker",
    actionImage: "docker:27",
    dependsOn: ["lint", "unit-tests", "build"],
    actionSpec: { cmd: "docker build -t app ." },
  },
  {
    stepName: "deploy",
    actionName: "kubectl-apply",
    actionType: "shell",
    dependsOn: ["package"],
    actionSpec: { cmd: "kubectl apply -f k8s/" },
  },
  {
    stepName: "notify",
    actionName: "slack-notify",
    actionType: "shell",
    dependsOn: ["deploy"],
    continueOnFailure: true,
    actionSpec: { channel: "#deploys" },
  },
];

/** Worker i's capabilities: the first runs everything, then shell-only, docker-only, both, ... */
export function capabilitiesOf(i: number): ActionType[] {
  return i === 0
    ? ["shell", "docker"]
    : (([["shell"], ["docker"], ["shell", "docker"]] as ActionType[][])[(i - 1) % 3] ?? ["shell"]);
}

/** Deterministic per-step outcome from the seed, whichever worker runs the step. */
export function stepOutcome(seed: number, jobIndex: number, stepName: string, failRate: number, maxMs: number) {
  let h = 2166136261 ^ seed;
  for (const ch of `${jobIndex}:${stepName}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  const next = () => {
    h = (h + 0x6d2b79f5) | 0;
    let t = Math.imul(h ^ (h >>> 15), 1 | h);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { fail: next() < failRate, ms: Math.round(2 + next() * (maxMs - 2)) };
}
