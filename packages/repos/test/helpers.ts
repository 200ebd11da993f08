import { randomUUID } from "node:crypto";
import type { ActionType, NewJobStep } from "@stroem/schema";
import { sql } from "drizzle-orm";
import { type Executor, JobRepo, JobStepRepo, WorkerRepo } from "../src/index.js";

export async function registerWorker(db: Executor, capabilities: ActionType[] = ["shell", "docker", "pod"]) {
  const workerId = randomUUID();
  await WorkerRepo.register(db, { workerId, name: `w-${workerId.slice(0, 8)}`, capabilities });
  return workerId;
}

export function newJob(db: Executor, overrides: Partial<JobRepo.NewJob> = {}) {
  return JobRepo.create(db, {
    workspace: "default",
    taskName: "task",
    mode: "distributed",
    sourceType: "user",
    ...overrides,
  });
}

/** A job with `n` independent ready steps named s0000, s0001, ... */
export async function jobWithReadySteps(db: Executor, n: number, actionType: ActionType = "shell") {
  const jobId = await newJob(db);
  const steps: NewJobStep[] = Array.from({ length: n }, (_, i) => ({
    jobId,
    stepName: `s${String(i).padStart(4, "0")}`,
    actionName: "run",
    actionType,
    status: "ready",
  }));
  await JobStepRepo.createSteps(db, steps);
  return jobId;
}

/** What `fn` threw; fails the test if it did not throw. */
export async function errorOf(fn: () => Promise<unknown>): Promise<Error> {
  try {
    await fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected an error");
}

/** A promise with its resolve exposed, to hold work open in concurrency tests. */
export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A pending shell step; override what the test cares about. */
export const step = (jobId: string, stepName: string, extra: Partial<NewJobStep> = {}): NewJobStep => ({
  jobId,
  stepName,
  actionName: "run",
  actionType: "shell",
  status: "pending",
  ...extra,
});

/** Polls `check` until it holds, failing after `ms`: wait for a condition, never sleep and hope. */
export async function waitFor(check: () => Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Sessions of this database waiting for a lock now (a concurrency test's "the other one is blocked"). */
export async function lockWaiters(db: Executor): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(
    sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`,
  );
  return Number(rows[0]?.n ?? 0);
}
