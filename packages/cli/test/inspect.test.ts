import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { JobRepo, JobStepRepo, WorkerRepo } from "@stroem/repos";
import { useTestDb } from "@stroem/testing/fixture";
import { beforeEach, describe, expect, it } from "vitest";

/** `status`'s stuck section, `jobs` and `graph`'s details, each on a database of this file's own. */
const BIN = fileURLToPath(new URL("../dist/bin.js", import.meta.url));
const t = useTestDb();

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, DATABASE_URL: undefined, ...env }, timeout: 120_000 },
      (error, stdout, stderr) => {
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

/** `--url` for this file's database (and `--pooler` when the run goes through one). */
const db = () => ["--url", t.url, ...(t.pooler ? ["--pooler"] : [])];
const q = (text: string, values: unknown[] = []) => t.db.$client.query(text, values);

beforeEach(async () => {
  await q("delete from job");
  await q("delete from worker");
});

async function worker(name: string, capabilities: Array<"shell" | "docker" | "pod">, silentSecs?: number) {
  const workerId = randomUUID();
  await WorkerRepo.register(t.db, { workerId, name, capabilities });
  if (silentSecs !== undefined)
    await q("update worker set last_heartbeat = now() - make_interval(secs => $2) where worker_id = $1", [
      workerId,
      silentSecs,
    ]);
  return workerId;
}

/** A job of one shell step, claimed by `workerId` `minutesAgo` minutes ago. */
async function runningJob(workerId: string, minutesAgo: number, stepName = "build") {
  const jobId = await JobRepo.createWithSteps(t.db, { taskName: "ci", sourceType: "api" }, [
    { stepName, actionName: "run", actionType: "shell" },
  ]);
  await JobStepRepo.markRunning(t.db, jobId, stepName, workerId);
  await q("update step_live set started_at = now() - make_interval(mins => $2) where job_id = $1", [jobId, minutesAgo]);
  return jobId;
}

describe("stroem-db status: what is stuck", () => {
  it("lists the stale workers' running steps, the oldest running steps and the ready steps nobody can take", async () => {
    const stale = await worker("gone", ["shell", "pod"], 3600);
    const alive = await worker("busy", ["shell"]);
    const held = await runningJob(stale, 10, "compile");
    const live = await runningJob(alive, 20, "test");
    await JobRepo.createWithSteps(t.db, { taskName: "img", sourceType: "api" }, [
      { stepName: "bake", actionName: "run", actionType: "pod" },
      { stepName: "push", actionName: "run", actionType: "pod" },
    ]);
    const gpuJob = await JobRepo.createWithSteps(t.db, { taskName: "train", sourceType: "api" }, [
      { stepName: "fit", actionName: "run", actionType: "shell", requiredTags: ["gpu"] },
    ]);
    const { code, stdout, stderr } = await cli(["status", ...db()]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    const stuck = stdout.slice(stdout.indexOf("Stuck: running steps"));
    // Held by the silent worker: the job, the step, the worker, how long silent, the attempt, how long running.
    expect(stuck).toMatch(/^Stuck: running steps held by stale or inactive workers \(no heartbeat for 30\.0s\): 1$/m);
    expect(stuck).toMatch(
      new RegExp(`^${held}\\s+compile\\s+gone \\(${stale.slice(0, 8)}\\)\\s+silent 60m\\d+s\\s+1\\s+10m\\d+s$`, "m"),
    );
    expect(stuck).toContain("`stroem-db maintain`");
    // The live worker's step is not stuck.
    expect(stuck.slice(0, stuck.indexOf("Stuck: oldest"))).not.toContain(live);
    // The oldest running steps, whoever holds them: the live worker's first (20 minutes).
    const oldest = stuck.slice(stuck.indexOf("Stuck: oldest running steps"));
    expect(oldest).toMatch(/^Stuck: oldest running steps \(2\)$/m);
    const rows = oldest.split("\n").filter((l) => /^[0-9a-f]{8}-/.test(l));
    expect(rows[0]).toMatch(
      new RegExp(`^${live}\\s+test\\s+shell\\s+busy \\(${alive.slice(0, 8)}\\)\\s+1\\s+20m\\d+s$`),
    );
    expect(rows[1]).toMatch(new RegExp(`^${held}\\s+compile\\s+shell\\s+gone`));
    // pod: only the silent worker has it, so nobody takes the two ready pod steps;
    // the live shell worker has no gpu tag, so nobody takes the gpu step.
    expect(stuck).toMatch(/^Stuck: ready steps no live worker can take .*: 3$/m);
    // The wait: any duration (a loaded machine takes seconds).
    expect(stuck).toMatch(/^pod\s+-\s+no live worker has the ability\s+2\s+2\s+\S+$/m);
    expect(stuck).toMatch(/^shell\s+gpu\s+no live worker with the ability may take the tags\s+1\s+1\s+\S+$/m);
    expect(stuck).not.toMatch(/^shell\s+-/m);
    // And the steps themselves, oldest first.
    expect(stuck).toMatch(/^ {2}the oldest \(3\):$/m);
    expect(stuck).toMatch(
      new RegExp(
        `^${gpuJob}\\s+fit\\s+shell\\s+gpu\\s+no live worker with the ability may take the tags\\s+\\S+$`,
        "m",
      ),
    );
  });

  it("--format json carries every section, dates as ISO strings", async () => {
    const stale = await worker("gone", ["shell"], 3600);
    const held = await runningJob(stale, 5);
    await JobRepo.createWithSteps(t.db, { taskName: "img", sourceType: "api" }, [
      { stepName: "bake", actionName: "run", actionType: "docker" },
    ]);
    const { code, stdout, stderr } = await cli(["status", ...db(), "--format", "json", "--stale-after", "60"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    const out = JSON.parse(stdout);
    expect(out.workers).toEqual([expect.objectContaining({ workerId: stale, name: "gone", health: "stale" })]);
    expect(out.jobs).toMatchObject({ running: 1, pending: 1 });
    expect(out.ready).toEqual([{ actionType: "docker", ready: 1, oldestReadyAt: expect.any(String) }]);
    expect(out.stuck.staleAfterMs).toBe(60_000);
    expect(out.stuck.heldByStaleWorkers).toMatchObject({
      total: 1,
      steps: [
        { jobId: held, stepName: "build", attempt: 1, workerId: stale, workerName: "gone", workerStatus: "active" },
      ],
    });
    const [step] = out.stuck.heldByStaleWorkers.steps;
    expect(new Date(step.startedAt).toISOString()).toBe(step.startedAt);
    expect(step.runningForMs).toBeGreaterThanOrEqual(5 * 60_000);
    expect(out.stuck.oldestRunning).toMatchObject([{ jobId: held, stepName: "build" }]);
    expect(out.stuck.unmatchedReady).toMatchObject([
      { actionType: "docker", requiredTags: [], reason: "ability", ready: 1, due: 1 },
    ]);
    expect(out.stuck.unmatchedReadySteps).toMatchObject([
      { stepName: "bake", actionType: "docker", requiredAbility: "docker", reason: "ability" },
    ]);
  });

  it("--limit cuts each list and says how many more are stuck", async () => {
    const stale = await worker("gone", ["shell"], 3600);
    for (const m of [3, 2, 1]) await runningJob(stale, m);
    const { code, stdout } = await cli(["status", ...db(), "--limit", "1"]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/held by stale or inactive workers .*: 3$/m);
    expect(stdout).toMatch(/^ {2}… and 2 more \(--limit 3 to list them\)$/m);
    expect(stdout).toMatch(/^Stuck: oldest running steps \(1\)$/m);
  });

  it("says so when nothing is stuck; DATABASE_URL is the default URL", async () => {
    await worker("idle", ["shell", "docker", "pod"]);
    const { code, stdout, stderr } = await cli(["status", ...(t.pooler ? ["--pooler"] : [])], { DATABASE_URL: t.url });
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toMatch(/held by stale or inactive workers .*: 0$/m);
    expect(stdout).toMatch(/^Stuck: oldest running steps\n {2}\(nothing running\)$/m);
    expect(stdout).toMatch(/no live worker can take .*: 0$/m);
  });

  it.each([
    ["--limit 0", ["--limit", "0"], /option '--limit <n>' argument '0' is invalid/],
    ["--format xml", ["--format", "xml"], /option '--format <format>' argument 'xml' is invalid/],
  ])("refuses %s before connecting", async (_, args, expected) => {
    const { code, stdout, stderr } = await cli(["status", "--url", "postgres://127.0.0.1:1/x", ...args]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(expected);
    expect(stderr).not.toMatch(/ECONNREFUSED/);
  });
});

describe("stroem-db jobs", () => {
  /** Five jobs of workspace `cli-jobs`, created a minute apart (#0 oldest); #3 failed with "exit 137 oomkilled". */
  async function seed() {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const jobId = await JobRepo.createWithSteps(
        t.db,
        { workspace: "cli-jobs", taskName: i % 2 ? "deploy" : "lint", sourceType: i === 4 ? "webhook" : "api" },
        [{ stepName: "run", actionName: "x", actionType: "shell" }],
      );
      await q(
        "update job set created_at = '2026-05-01T09:00:00Z'::timestamptz + make_interval(mins => $2) where job_id = $1",
        [jobId, i],
      );
      ids.push(jobId);
    }
    await JobStepRepo.fail(t.db, { jobId: ids[3] as string, stepName: "run" }, "exit 137 oomkilled");
    await JobRepo.createWithSteps(t.db, { workspace: "elsewhere", taskName: "lint", sourceType: "api" }, [
      { stepName: "run", actionName: "x", actionType: "shell" },
    ]);
    return ids;
  }
  const rowIds = (stdout: string) =>
    stdout
      .split("\n")
      .map((l) => /^([0-9a-f-]{36})\s/.exec(l)?.[1])
      .filter(Boolean);

  it("lists jobs newest first, a page at a time, with the cursor of the next page", async () => {
    const ids = await seed();
    const first = await cli(["jobs", ...db(), "--workspace", "cli-jobs", "--limit", "2"]);
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(first.stdout.split("\n")[0]).toMatch(/^job\s+workspace\s+task\s+status\s+source\s+created\s+time$/);
    expect(rowIds(first.stdout)).toEqual([ids[4], ids[3]]);
    expect(first.stdout).toMatch(
      new RegExp(`^${ids[3]}\\s+cli-jobs\\s+deploy\\s+failed\\s+api\\s+2026-05-01T09:03:00\\.000Z\\s+ran \\S+$`, "m"),
    );
    const cursor = /^2 jobs; next page: --cursor (\S+)$/m.exec(first.stdout)?.[1];
    expect(cursor).toBeDefined();
    const second = await cli([
      "jobs",
      ...db(),
      "--workspace",
      "cli-jobs",
      "--limit",
      "2",
      "--cursor",
      cursor as string,
    ]);
    expect(rowIds(second.stdout)).toEqual([ids[2], ids[1]]);
    const next = /--cursor (\S+)$/m.exec(second.stdout)?.[1] as string;
    const last = await cli(["jobs", ...db(), "--workspace", "cli-jobs", "--limit", "2", "--cursor", next]);
    expect(rowIds(last.stdout)).toEqual([ids[0]]);
    expect(last.stdout).toMatch(/^1 jobs; last page$/m);
    // Every workspace by default.
    const all = await cli(["jobs", ...db()]);
    expect(rowIds(all.stdout)).toHaveLength(6);
  });

  it("filters by task, status, source, text and creation time", async () => {
    const ids = await seed();
    const ws = ["--workspace", "cli-jobs"];
    const run = async (...args: string[]) => {
      const r = await cli(["jobs", ...db(), ...ws, ...args]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      return rowIds(r.stdout);
    };
    expect(await run("--task", "deploy")).toEqual([ids[3], ids[1]]);
    expect(await run("--task", "deploy", "--task", "lint")).toHaveLength(5);
    expect(await run("--status", "failed")).toEqual([ids[3]]);
    expect(await run("--status", "failed,pending")).toEqual([ids[4], ids[3], ids[2], ids[1], ids[0]]);
    expect(await run("--source", "webhook")).toEqual([ids[4]]);
    expect(await run("--text", "oomkilled")).toEqual([ids[3]]);
    expect(await run("--from", "2026-05-01T09:01Z", "--to", "2026-05-01T09:03Z")).toEqual([ids[2], ids[1]]);
    const none = await cli(["jobs", ...db(), ...ws, "--text", "nothing-like-this"]);
    expect(none.stdout).toBe("(no jobs match)\n");
  });

  it("--format json is JobRepo.search's page, nextCursor null on the last", async () => {
    await seed();
    const json = await cli(["jobs", ...db(), "--workspace", "cli-jobs", "--status", "pending", "--format", "json"]);
    expect(json).toMatchObject({ code: 0, stderr: "" });
    const direct = await JobRepo.search(t.db, { workspace: "cli-jobs", statuses: ["pending"], limit: 20 });
    expect(JSON.parse(json.stdout)).toEqual({ jobs: JSON.parse(JSON.stringify(direct.jobs)), nextCursor: null });
    const paged = JSON.parse((await cli(["jobs", ...db(), "--limit", "1", "--format", "json"])).stdout);
    expect(paged.jobs).toHaveLength(1);
    expect(typeof paged.nextCursor).toBe("string");
  });

  it.each([
    ["an unknown status", ["--status", "done"], /option '--status <status>' argument 'done' is invalid/],
    ["an unknown source", ["--source", "cron"], /option '--source <type>' argument 'cron' is invalid/],
    ["a cursor jobs did not print", ["--cursor", "bm9wZQ"], /option '--cursor <cursor>' argument 'bm9wZQ' is invalid/],
    ["a page of 0", ["--limit", "0"], /option '--limit <n>' argument '0' is invalid/],
    ["a page over 1000", ["--limit", "1001"], /option '--limit <n>' argument '1001' is invalid/],
    ["an empty task", ["--task", ""], /option '--task <name>' argument '' is invalid/],
    [
      "--from after --to",
      ["--from", "2026-05-02", "--to", "2026-05-01"],
      /^stroem-db: InvalidRangeError: --from: must be before --to\n$/,
    ],
  ])("refuses %s before connecting, in one line", async (_, args, expected) => {
    const { code, stdout, stderr } = await cli(["jobs", "--url", "postgres://127.0.0.1:1/x", ...args]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(expected);
    expect(stderr).not.toMatch(/ECONNREFUSED/);
  });

  it("refuses a text without a word (search's own check)", async () => {
    const { code, stdout, stderr } = await cli(["jobs", ...db(), "--text", "!!!"]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toBe("stroem-db: InvalidInputError: text: has no word to search for\n");
  });
});

describe("stroem-db graph: attempts, retries, workers, times, the job's reason", () => {
  it("shows each step's attempt, worker and time, the retry history, and a cancel's reason", async () => {
    const w = await worker("runner", ["shell"]);
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "ci", sourceType: "api" }, [
      { stepName: "checkout", actionName: "git", actionType: "shell" },
      {
        stepName: "test",
        actionName: "run",
        actionType: "shell",
        dependsOn: ["checkout"],
        maxRetries: 2,
        retryBackoffSecs: 0,
      },
      { stepName: "deploy", actionName: "run", actionType: "shell", dependsOn: ["test"] },
    ]);
    await JobStepRepo.markRunning(t.db, jobId, "checkout", w);
    await JobStepRepo.complete(t.db, { jobId, stepName: "checkout", workerId: w, attempt: 1 });
    await JobStepRepo.markRunning(t.db, jobId, "test", w);
    const retried = await JobStepRepo.fail(t.db, { jobId, stepName: "test", workerId: w, attempt: 1 }, "exit 1: flaky");
    expect(retried).toMatchObject({ retried: true });
    await JobStepRepo.markRunning(t.db, jobId, "test", w);
    await q("update step_live set started_at = now() - interval '2 minutes' where job_id = $1 and step_name = 'test'", [
      jobId,
    ]);
    await JobRepo.cancel(t.db, jobId, { reason: "superseded by a newer push" });

    const { code, stdout, stderr } = await cli(["graph", jobId, ...db()]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`^job ${jobId} {2}default/ci {2}cancelled$`, "m"));
    expect(stdout).toMatch(/^ {2}created \S+Z {2}started \S+Z {2}finished \S+Z {2}\(ran \S+\)$/m);
    expect(stdout).toMatch(/^ {2}cancel reason: superseded by a newer push$/m);
    expect(stdout).toMatch(/^ {2}▶ running\s+test\s+\[shell\]\s+← checkout$/m);
    const label = `runner \\(${w.slice(0, 8)}\\)`;
    expect(stdout).toMatch(/^step\s+status\s+attempt\s+rescues\s+worker\s+time$/m);
    expect(stdout).toMatch(new RegExp(`^checkout\\s+completed\\s+1/1\\s+0\\s+${label}\\s+ran \\S+$`, "m"));
    expect(stdout).toMatch(
      new RegExp(`^test\\s+running\\s+2/3\\s+0\\s+${label}\\s+running 2m\\d+s \\(cancel requested\\)$`, "m"),
    );
    expect(stdout).toMatch(/^deploy\s+cancelled\s+0\/1\s+0$/m);
    expect(stdout).toMatch(
      new RegExp(`^Retries\\n {2}test {2}attempt 1 on ${label}: failed \\S+Z after \\S+: exit 1: flaky$`, "m"),
    );
  });

  it("shows where a job came from (a restart, a retry) and what retried it", async () => {
    const w = await worker("lineage", ["shell"]);
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "release", sourceType: "api" }, [
      { stepName: "build", actionName: "make", actionType: "shell" },
      { stepName: "ship", actionName: "push", actionType: "shell", dependsOn: ["build"] },
    ]);
    await JobStepRepo.markRunning(t.db, jobId, "build", w);
    await JobStepRepo.complete(t.db, { jobId, stepName: "build" });
    await JobStepRepo.markRunning(t.db, jobId, "ship", w);
    await JobStepRepo.fail(t.db, { jobId, stepName: "ship" }, "registry down");
    const restarted = await JobRepo.restart(t.db, jobId, { fromStep: "ship" });
    const retry = await JobRepo.retry(t.db, jobId);
    const graph = async (id: string) => (await cli(["graph", id, ...db()])).stdout;
    expect(await graph(jobId)).toMatch(new RegExp(`^ {2}retried by ${retry}$`, "m"));
    expect(await graph(restarted)).toMatch(new RegExp(`^ {2}restarted from step ship of ${jobId}$`, "m"));
    expect(await graph(retry)).toMatch(new RegExp(`^ {2}retry 1 of ${jobId} \\(made from ${jobId}\\)$`, "m"));
    expect(await graph(restarted)).toMatch(/^ {2}✔ completed\s+build/m);
  });

  it("shows a job's own error (a timeout) and no Retries section without retries", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "slow", sourceType: "api", timeoutSecs: 60 }, [
      { stepName: "wait", actionName: "x", actionType: "shell" },
    ]);
    await q("update job_deadline set deadline = now() - interval '1 second' where job_id = $1", [jobId]);
    const swept = await JobStepRepo.sweepTimeouts(t.db);
    expect(swept.jobs).toEqual([jobId]);
    const { code, stdout } = await cli(["graph", jobId, ...db()]);
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`^job ${jobId} {2}default/slow {2}failed$`, "m"));
    expect(stdout).toMatch(/^ {2}error: .*time/m);
    expect(stdout).toMatch(/^wait\s+cancelled\s+0\/1\s+0$/m);
    expect(stdout).not.toContain("Retries");
  });
});
