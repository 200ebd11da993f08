/**
 * Bulk set-up of "ours" before a measurement (not timed): the jobs and their
 * steps through `JobRepo.createMany` (a call per chunk of at most 2,000 jobs
 * or about 20,000 steps), so whatever the repos keep per job and per step
 * (definitions, live rows, a `job_live` row only for a job of several steps)
 * stays theirs to maintain.
 */
import { type Database, JobRepo, type NewFlowStep, type NewJobWithSteps } from "@stroem/repos";

const CHUNK_JOBS = 2000;
const CHUNK_STEPS = 20_000;

/** A job's steps: name and the names it waits for. */
export interface StepShape {
  name: string;
  dependsOn?: string[];
  /** Tags a worker must have to take the step (the bench's workers have none). */
  requiredTags?: string[];
}

/** Creates `count` jobs of the given shape (steps without dependencies start ready); returns their ids. */
export async function seedJobs(db: Database, count: number, shape: readonly StepShape[]): Promise<string[]> {
  const steps: NewFlowStep[] = shape.map((s) => ({
    stepName: s.name,
    actionName: "noop",
    actionType: "shell",
    dependsOn: s.dependsOn ?? [],
    ...(s.requiredTags ? { requiredTags: s.requiredTags } : {}),
  }));
  const item: NewJobWithSteps = { job: { taskName: "bench", sourceType: "api" }, steps };
  const perCall = Math.max(1, Math.min(CHUNK_JOBS, Math.floor(CHUNK_STEPS / Math.max(1, shape.length))));
  const ids: string[] = [];
  for (let i = 0; i < count; i += perCall) {
    const n = Math.min(perCall, count - i);
    ids.push(
      ...(await JobRepo.createMany(
        db,
        Array.from({ length: n }, () => item),
      )),
    );
  }
  await db.execute("analyze");
  return ids;
}

export const FLAT: StepShape[] = [{ name: "run" }];

/** A one-step job no bench worker can take (it requires a tag they lack). */
export const UNTAKEABLE: StepShape[] = [{ name: "run", requiredTags: ["gpu"] }];

export const DIAMOND: StepShape[] = [
  { name: "a" },
  { name: "b", dependsOn: ["a"] },
  { name: "c", dependsOn: ["a"] },
  { name: "d", dependsOn: ["b", "c"] },
];

/** root -> n children -> join. */
export function fanOut(n: number): StepShape[] {
  const children = Array.from({ length: n }, (_, i) => `child-${String(i).padStart(5, "0")}`);
  return [
    { name: "root" },
    ...children.map((name) => ({ name, dependsOn: ["root"] })),
    { name: "join", dependsOn: children },
  ];
}

/** The loop step of `LOOP_JOB`. */
export const LOOP_STEP = "each";

/**
 * A for_each loop's job: list -> each (`forEach` over list's output) ->
 * after. `after` requires a tag the bench's workers lack (`done`), so once
 * the loop completes it stays ready: the check sees that the loop promoted it.
 */
export const LOOP_JOB: NewFlowStep[] = [
  { stepName: "list", actionName: "noop", actionType: "shell", dependsOn: [] },
  { stepName: LOOP_STEP, actionName: "noop", actionType: "shell", dependsOn: ["list"], forEach: "{{ list.output }}" },
  { stepName: "after", actionName: "noop", actionType: "shell", dependsOn: [LOOP_STEP], requiredTags: ["done"] },
];

/**
 * A for_each loop's shape declared up front: one job of `n` steps ready at
 * once, then `after` waiting for all of them (requiring a tag the bench's
 * workers lack, like `LOOP_JOB`'s, so it stays ready once they are done).
 */
export function wide(n: number): StepShape[] {
  const steps = Array.from({ length: n }, (_, i) => `step-${String(i).padStart(5, "0")}`);
  return [...steps.map((name) => ({ name })), { name: "after", dependsOn: steps, requiredTags: ["done"] }];
}
