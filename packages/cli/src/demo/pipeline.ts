import type { NewFlowStep } from "@stroem/repos";
import type { ActionType } from "@stroem/schema";

/**
 * Retries for the flaky steps: two more attempts, at once (`retryBackoffSecs`
 * 0, the smallest the schema allows; 1 s, exponential, would add up to 3 s
 * to a run of about 1.5 s).
 */
const RETRY = { maxRetries: 2, retryBackoffSecs: 0 } as const;

/** The regions the `deploy` loop runs in: one instance each (`expandLoop`). */
export const REGIONS = ["eu-west", "us-east", "ap-south"] as const;

/** The child job a `smoke-test` step starts (`startChild`): probe the deployment, then verify. */
export const SMOKE_TEST: readonly NewFlowStep[] = [
  { stepName: "probe", actionName: "curl-health", actionType: "shell", actionSpec: { cmd: "curl -f $URL/health" } },
  {
    stepName: "verify",
    actionName: "check-metrics",
    actionType: "shell",
    dependsOn: ["probe"],
    actionSpec: { cmd: "./check-error-rate" },
  },
];

/**
 * A CI/CD pipeline: checkout, three checks in parallel, package, a release
 * manager's approval (a gate the demo's server approves), a deploy per
 * region (a for_each loop the server expands into one instance per region),
 * a smoke test run as a child job (a task step), and a notification that
 * always runs. `unit-tests` and each deploy retry.
 */
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
    ...RETRY,
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
    stepName: "approve",
    actionName: "release-approval",
    actionType: "approval",
    dependsOn: ["package"],
  },
  {
    stepName: "deploy",
    actionName: "kubectl-apply",
    actionType: "shell",
    dependsOn: ["approve"],
    forEach: "{{ input.regions }}",
    actionSpec: { cmd: "kubectl --context $REGION apply -f k8s/" },
    ...RETRY,
  },
  {
    stepName: "smoke-test",
    actionName: "smoke-test",
    actionType: "task",
    dependsOn: ["deploy"],
  },
  {
    stepName: "notify",
    actionName: "slack-notify",
    actionType: "shell",
    dependsOn: ["smoke-test"],
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

/** Share of first-attempt failures that fail every attempt (a real bug, not a flake). */
export const PERSISTENT_SHARE = 0.5;

/** Uniform draws in [0, 1), deterministic in the seed and the key. */
function draws(seed: number, key: string): () => number {
  let h = 2166136261 ^ seed;
  for (const ch of key) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  return () => {
    h = (h + 0x6d2b79f5) | 0;
    let t = Math.imul(h ^ (h >>> 15), 1 | h);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Deterministic outcome of a step's attempt (1-based) from the seed, whichever
 * worker runs it. A first attempt fails with probability `failRate`; such a
 * failure is persistent (every later attempt fails too) for a
 * `PERSISTENT_SHARE` of steps, otherwise a flake: each retry then fails with
 * probability `failRate` again, so some retries succeed and some run out.
 */
export function stepOutcome(
  seed: number,
  jobIndex: number,
  stepName: string,
  failRate: number,
  maxMs: number,
  attempt = 1,
): { fail: boolean; ms: number } {
  const first = draws(seed, `${jobIndex}:${stepName}`);
  const firstFail = first() < failRate;
  const firstMs = Math.round(2 + first() * (maxMs - 2));
  if (attempt <= 1) return { fail: firstFail, ms: firstMs };
  const persistent = firstFail && first() < PERSISTENT_SHARE;
  const next = draws(seed, `${jobIndex}:${stepName}#${attempt}`);
  const fail = next() < failRate || persistent;
  return { fail, ms: Math.round(2 + next() * (maxMs - 2)) };
}
