/**
 * Bulk set-up of "ours" before a measurement (not timed): job rows by
 * multi-row INSERT, steps through `JobStepRepo.createSteps` (2,000 rows a
 * statement), so whatever the repos keep per step stays theirs to maintain.
 */
import { randomUUID } from "node:crypto";
import { type Database, JobStepRepo, type NewJobStep } from "@stroem/repos";
import { job } from "@stroem/schema";

const CHUNK = 2000;

/** A job's steps: name and the names it waits for. */
export interface StepShape {
  name: string;
  dependsOn?: string[];
}

/** Creates `count` jobs of the given shape (steps without dependencies start ready); returns their ids. */
export async function seedJobs(db: Database, count: number, shape: readonly StepShape[]): Promise<string[]> {
  // Random, as the repos make them (newJobId in @stroem/repos).
  const ids = Array.from({ length: count }, () => randomUUID());
  for (let i = 0; i < ids.length; i += CHUNK) {
    const chunk = ids.slice(i, i + CHUNK);
    await db.insert(job).values(chunk.map((jobId) => ({ jobId, taskName: "bench", sourceType: "api" as const })));
  }
  const steps: NewJobStep[] = [];
  const flush = async () => {
    await JobStepRepo.createSteps(db, steps.splice(0));
  };
  for (const jobId of ids) {
    for (const s of shape) {
      const dependsOn = s.dependsOn ?? [];
      steps.push({
        jobId,
        stepName: s.name,
        actionName: "noop",
        actionType: "shell",
        status: dependsOn.length === 0 ? "ready" : "pending",
        dependsOn,
      });
    }
    if (steps.length >= 20_000) await flush();
  }
  await flush();
  await db.execute("analyze");
  return ids;
}

export const FLAT: StepShape[] = [{ name: "run" }];

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
