import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dropDatabase, withClient, withDatabase } from "@stroem/embedded-pg";
import { ArtifactRepo, JobRepo, JobStepRepo, TaskStateRepo, WorkerRepo } from "@stroem/repos";
import { useTestDb } from "@stroem/testing/fixture";
import { afterAll, describe, expect, inject, it } from "vitest";
import { PIPELINE } from "../src/demo/pipeline.js";
import { sparkline } from "../src/format.js";

const BIN = fileURLToPath(new URL("../dist/bin.js", import.meta.url));
const ownServerOnly = Boolean(process.env.STROEM_TEST_DATABASE_URL);
const t = useTestDb();
const { adminUrl } = inject("stroemPg");

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

const created: string[] = [];
afterAll(async () => {
  for (const name of created) await dropDatabase(adminUrl, name);
});

describe("stroem-db migrate", () => {
  it("applies the migrations to an empty database, then finds nothing to do", async () => {
    const name = `stroem_cli_${Date.now()}`;
    await withClient(adminUrl, (c) => c.query(`create database ${name}`));
    created.push(name);
    const url = withDatabase(adminUrl, name);
    const first = await cli(["migrate", "--url", url]);
    expect(first).toMatchObject({ code: 0, stderr: "" });
    expect(first.stdout).toMatch(/^applied 0000_initial$/m);
    // DATABASE_URL is the default.
    const second = await cli(["migrate"], { DATABASE_URL: url });
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/Already up to date/);
    // --pooler opens the pool for a transaction pooler (the CI leg runs it through PgBouncer).
    const pooled = await cli(["migrate", "--pooler", "--url", url]);
    expect(pooled).toMatchObject({ code: 0, stderr: "" });
    expect(pooled.stdout).toMatch(/Already up to date/);
  });
});

describe("stroem-db status and graph", () => {
  it("shows workers, jobs and the ready backlog", async () => {
    await WorkerRepo.register(t.db, { workerId: crypto.randomUUID(), name: "status-worker", capabilities: ["shell"] });
    await JobRepo.createWithSteps(t.db, { taskName: "ci", sourceType: "api" }, PIPELINE);
    const { code, stdout } = await cli(["status", "--url", t.url]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/status-worker\s+shell\s+-\s+active\s+\S+ ago\s+alive/);
    expect(stdout).toMatch(/pending\s+1/);
    expect(stdout).toMatch(/shell\s+1\s+\S+/);
  });

  it("draws a job's DAG as text and as Mermaid", async () => {
    const jobId = await JobRepo.createWithSteps(t.db, { taskName: "ci", sourceType: "api" }, PIPELINE);
    const workerId = crypto.randomUUID();
    await WorkerRepo.register(t.db, { workerId, name: "g", capabilities: ["shell"] });
    await JobStepRepo.markRunning(t.db, jobId, "checkout", workerId);
    await JobStepRepo.markFailed(t.db, jobId, "checkout", "exit 128");
    await JobRepo.advance(t.db, jobId);
    const text = await cli(["graph", jobId, "--url", t.url]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`job ${jobId}`);
    expect(text.stdout).toMatch(/✘ failed\s+checkout\s+\[shell\]\s+\(exit 128\)/);
    expect(text.stdout).toMatch(/⊘ skipped\s+approve\s+\[approval\]\s+← package/);
    expect(text.stdout).toMatch(/⊘ skipped\s+deploy\s+\[shell\]\s+← approve/);
    expect(text.stdout).toMatch(/○ ready\s+notify/);
    // What the job left: its artifacts and the state it wrote.
    await ArtifactRepo.put(t.db, {
      jobId,
      name: "report.html",
      stepName: "checkout",
      sizeBytes: 2048,
      storageKey: "s3/r1",
    });
    await TaskStateRepo.insertAndPrune(
      t.db,
      { workspace: "default", task: "ci", storageKey: "s3/state-1", sizeBytes: 10, isJson: true, jobId },
      { keep: 3 },
    );
    const left = await cli(["graph", jobId, "--url", t.url]);
    expect(left.stdout).toMatch(/Artifacts \(1, 2\.0 KB\)/);
    expect(left.stdout).toMatch(/report\.html\s+checkout\s+application\/octet-stream\s+2\.0 KB\s+s3\/r1/);
    expect(left.stdout).toMatch(/State written\n.*\n.*\ntask default\/ci\s+10 B\s+yes\s+s3\/state-1\s+\S+ ago/);
    const mermaid = await cli(["graph", jobId, "--url", t.url, "--format", "mermaid"]);
    expect(mermaid.code).toBe(0);
    expect(mermaid.stdout.split("\n")[0]).toBe("flowchart LR");
    expect(mermaid.stdout).toContain('s0["checkout<br/><i>failed</i>"]:::failed');
    expect(mermaid.stdout).toMatch(/s\d --> s\d/);
  });
});

describe("stroem-db stats", () => {
  const one = [{ stepName: "run", actionName: "x", actionType: "shell" as const }];
  /** A finished job of workspace `cli-stats` created `minutes` after 09:00 on 2026-05-01. */
  async function finishedJob(taskName: string, minutes: number, outcome: "completed" | "failed") {
    const jobId = await JobRepo.createWithSteps(t.db, { workspace: "cli-stats", taskName, sourceType: "api" }, one);
    const workerId = crypto.randomUUID();
    await WorkerRepo.register(t.db, { workerId, name: "s", capabilities: ["shell"] });
    await JobStepRepo.markRunning(t.db, jobId, "run", workerId);
    if (outcome === "failed") await JobStepRepo.fail(t.db, { jobId, stepName: "run" }, "exit 1");
    else await JobStepRepo.complete(t.db, { jobId, stepName: "run" });
    const created = new Date(Date.parse("2026-05-01T09:00:00Z") + minutes * 60_000).toISOString();
    // created_at is the definition's; started_at and completed_at the finished job's result.
    await t.db.$client.query("update job set created_at = $1::timestamptz where job_id = $2", [created, jobId]);
    await t.db.$client.query(
      `update job_result set started_at = $1::timestamptz + interval '10 s',
        completed_at = $1::timestamptz + interval '70 s' where job_id = $2`,
      [created, jobId],
    );
  }
  const window = ["--workspace", "cli-stats", "--from", "2026-05-01T09:00Z", "--to", "2026-05-01T13:00Z"];

  it("prints counts, percentiles, failure rates and a throughput sparkline; --format json is JobRepo.stats", async () => {
    await finishedJob("deploy", 5, "completed");
    await finishedJob("deploy", 10, "failed");
    await finishedJob("deploy", 15, "completed");
    await finishedJob("deploy", 20, "completed");
    await finishedJob("lint", 130, "completed"); // third hour
    const table = await cli(["stats", "--url", t.url, ...window, "--bucket", "1h"]);
    expect(table).toMatchObject({ code: 0, stderr: "" });
    expect(table.stdout).toContain(
      "Jobs created 2026-05-01T09:00:00.000Z to 2026-05-01T13:00:00.000Z (workspace cli-stats)",
    );
    expect(table.stdout).toMatch(/^completed\s+4$/m);
    expect(table.stdout).toMatch(/^failed\s+1$/m);
    expect(table.stdout).toMatch(/^total\s+5$/m);
    expect(table.stdout).toMatch(/^job duration\s+5\s+1m0s\s+1m0s\s+1m0s$/m);
    expect(table.stdout).toMatch(/^deploy\s+4\s+3\s+1\s+0\s+25\.0%$/m);
    expect(table.stdout).toMatch(/^lint\s+1\s+1\s+0\s+0\s+0\.0%$/m);
    // Four hourly buckets: 4 jobs, none, 1, none.
    expect(table.stdout).toContain("Throughput per 1h (4 buckets from 2026-05-01T09:00:00.000Z)");
    expect(table.stdout).toMatch(/^ {2}finished █▁▃▁ {2}max 4, total 5$/m);
    expect(table.stdout).toMatch(/^ {2}created {2}█▁▃▁ {2}max 4, total 5$/m);

    const json = await cli(["stats", "--url", t.url, ...window, "--task", "deploy", "--format", "json"]);
    expect(json).toMatchObject({ code: 0, stderr: "" });
    const direct = await JobRepo.stats(t.db, {
      workspace: "cli-stats",
      taskName: "deploy",
      from: new Date("2026-05-01T09:00Z"),
      to: new Date("2026-05-01T13:00Z"),
      bucket: "1h",
    });
    expect(JSON.parse(json.stdout)).toEqual({
      workspace: "cli-stats",
      taskName: "deploy",
      ...JSON.parse(JSON.stringify(direct)),
    });
    expect(JSON.parse(json.stdout)).toMatchObject({ total: 4, jobs: { failed: 1 }, bucketSecs: 3600 });

    // The defaults: the 24 hours before now, every workspace, hourly.
    const recent = await cli(["stats", "--url", t.url]);
    expect(recent.code).toBe(0);
    expect(recent.stdout).toMatch(/\(every workspace\)/);
    expect(recent.stdout).toContain("Throughput per 1h (24 buckets");
  });

  it.each([
    ["a bucket it cannot read", ["--bucket", "1w"], /option '--bucket <duration>' argument '1w' is invalid/],
    ["a date it cannot read", ["--from", "yesterday"], /option '--from <when>' argument 'yesterday' is invalid/],
    [
      "--from after --to",
      ["--from", "2026-05-02", "--to", "2026-05-01"],
      /^stroem-db: InvalidRangeError: from: must be before to\n$/,
    ],
    [
      "too many buckets",
      ["--from", "2026-05-01", "--to", "2026-05-02", "--bucket", "1m"],
      /^stroem-db: InvalidRangeError: bucket: gives 1440 buckets/,
    ],
    ["a bad format", ["--format", "xml"], /option '--format <format>' argument 'xml' is invalid/],
  ])("refuses %s in one line", async (_, args, expected) => {
    const { code, stdout, stderr } = await cli(["stats", "--url", t.url, ...args]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(expected);
  });

  it("sparkline: ▁ is zero, any value above zero shows, the largest is █", () => {
    expect(sparkline([])).toBe("");
    expect(sparkline([0, 0])).toBe("▁▁");
    expect(sparkline([0, 1, 100, 50])).toBe("▁▂█▅");
    expect(sparkline([1, 2, 3, 4, 5, 6, 7])).toBe("▂▃▄▅▆▇█");
  });
});

describe("errors are one line and a non-zero exit", () => {
  it.each([
    [
      "an unknown job",
      ["graph", "00000000-0000-4000-8000-000000000000"],
      /^stroem-db: JobNotFoundError: job 0{8}-.* not found\n$/,
    ],
    ["a job id that is not a UUID", ["graph", "nope"], /^stroem-db: InvalidInputError: jobId: must be a UUID/],
    ["a bad format", ["graph", "x", "--format", "svg"], /error: option '--format <format>' argument 'svg' is invalid/],
    ["a bad flag value", ["demo", "--jobs", "0"], /error: option '--jobs <n>' argument '0' is invalid/],
    ["an unknown flag", ["status", "--verbose"], /error: unknown option '--verbose'/],
    ["an unknown command", ["frobnicate"], /error: unknown command 'frobnicate'/],
  ])("%s", async (_, args, expected) => {
    const { code, stdout, stderr } = await cli([
      ...args,
      ...(args[0] === "graph" && args[1] !== "x" ? ["--url", t.url] : []),
    ]);
    expect(code).not.toBe(0);
    expect(stderr).toMatch(expected);
    expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(stdout).toBe("");
  });

  it("a migration that fails names the migration and Postgres' reason, in one line", async () => {
    const name = `stroem_cli_clash_${Date.now()}`;
    await withClient(adminUrl, (c) => c.query(`create database ${name}`));
    created.push(name);
    const url = withDatabase(adminUrl, name);
    await withClient(url, (c) => c.query("create table job (id int)"));
    const { code, stdout, stderr } = await cli(["migrate", "--url", url]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toBe(
      'stroem-db: migration 0000_initial failed: relation "job" already exists (42P07); nothing was applied\n',
    );
    const tables = await withClient(url, (c) =>
      c.query("select count(*)::int as n from pg_tables where schemaname = 'public'"),
    );
    expect(tables.rows[0].n).toBe(1); // the migration's transaction was rolled back
  });

  it("demo --url errors are translated like the other commands'", async () => {
    const { code, stdout, stderr } = await cli(["demo", "--url", "postgres://u:p@127.0.0.1:1/db"]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/^stroem-db: ConnectionError: cannot reach PostgreSQL at 127\.0\.0\.1:1: ECONNREFUSED/);
    expect(stderr.trim().split("\n")).toHaveLength(1);
  });

  it("--version prints the package's version", async () => {
    const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    const { code, stdout } = await cli(["--version"]);
    expect(code).toBe(0);
    expect(stdout).toBe(`${version}\n`);
  });

  it("no URL", async () => {
    const { code, stderr } = await cli(["status"]);
    expect(code).toBe(1);
    expect(stderr).toBe("stroem-db: no database URL: pass --url or set DATABASE_URL\n");
  });

  it("an unreachable server names host and port", async () => {
    const { code, stderr } = await cli(["status", "--url", "postgres://u:p@127.0.0.1:1/db"]);
    expect(code).toBe(1);
    expect(stderr).toMatch(/^stroem-db: ConnectionError: cannot reach PostgreSQL at 127\.0\.0\.1:1: ECONNREFUSED/);
    expect(stderr.trim().split("\n")).toHaveLength(1);
  });

  it("--help works on every command", async () => {
    for (const command of [
      [],
      ["demo"],
      ["migrate"],
      ["status"],
      ["graph"],
      ["purge"],
      ["stats"],
      ["jobs"],
      ["maintain"],
    ]) {
      const { code, stdout } = await cli([...command, "--help"]);
      expect(code).toBe(0);
      expect(stdout).toMatch(/^Usage: stroem-db/);
    }
  });
});

describe("stroem-db purge", () => {
  it("removes finished jobs older than --older-than, keeps the rest, and prints the counts", async () => {
    const flow = [{ stepName: "a", actionName: "x", actionType: "shell" as const }];
    const [oldJob, newJob, open] = await JobRepo.createMany(
      t.db,
      [0, 1, 2].map(() => ({ job: { taskName: "purge-me", sourceType: "api" as const }, steps: flow })),
    );
    for (const jobId of [oldJob, newJob] as string[]) await JobStepRepo.complete(t.db, { jobId, stepName: "a" });
    await t.db.$client.query("update job set created_at = now() - interval '41 days' where job_id = $1", [oldJob]);
    await t.db.$client.query("update job_result set completed_at = now() - interval '40 days' where job_id = $1", [
      oldJob,
    ]);
    // Other tests of this file leave old finished jobs too (the stats ones): all of them go.
    const { rows } = await t.db.$client.query<{ jobs: number; steps: number }>(
      `select count(*)::int as jobs, (select count(*)::int from job_step_state s join job_state j using (job_id)
         where j.completed_at < now() - interval '30 days') as steps
       from job_state where completed_at < now() - interval '30 days'`,
    );
    const { code, stdout, stderr } = await cli(["purge", "--url", t.url, "--older-than", "30d", "--batch-size", "50"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(rows[0]?.jobs).toBeGreaterThanOrEqual(1);
    expect(stdout).toMatch(new RegExp(`^jobs\\s+${rows[0]?.jobs}\\s+\\d{4}-`, "m"));
    expect(stdout).toMatch(new RegExp(`^steps\\s+${rows[0]?.steps}\\s`, "m"));
    expect(stdout).toMatch(/^audit events\s+0\s/m);
    expect(stdout).toMatch(/batches of up to 50 in/);
    expect(await JobRepo.get(t.db, oldJob as string)).toBeUndefined();
    expect((await JobRepo.get(t.db, newJob as string))?.status).toBe("completed");
    expect((await JobRepo.get(t.db, open as string))?.status).toBe("pending");
  });

  it("refuses a bad or missing age before connecting", async () => {
    for (const args of [["--older-than", "30 days"], ["--older-than", "-1d"], []]) {
      const { code, stderr } = await cli(["purge", "--url", "postgres://127.0.0.1:1/x", ...args]);
      expect(code).toBe(1);
      expect(stderr).toMatch(/older-than/);
      expect(stderr).not.toMatch(/ECONNREFUSED/);
    }
  });
});

/** The demo's deterministic figures (from the seed): job outcomes and retries. */
function figures(stdout: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const label of [
    "jobs completed",
    "jobs failed",
    "jobs cancelled",
    "steps retried",
    "  then completed",
    "  out of retries",
  ]) {
    const m = new RegExp(`^${label}\\s+(\\d+)$`, "m").exec(stdout);
    if (m) out[label.trim()] = Number(m[1]);
  }
  return out;
}

const CHECKS = [
  /✔ every job is terminal \((\d+)\/\1, 1 cancelled\)/,
  /✔ no step left pending, ready, running or suspended \(0 open\)/,
  /✔ no step was claimed more than its retry policy allows \(\d+ claimed again, 0 over maxRetries \+ 1\)/,
  /✔ every retry is in its step's retry_history \(\d+ entries, 0 steps mismatched\)/,
  /✔ every finished worker step went through a claim \(0 unclaimed\)/,
  /✔ every loop ended with its instances \(\d+ loops, 0 wrong\)/,
  /✔ every child job ended its parent step, once \(\d+ children, 0 wrong\)/,
  /✔ each executed step was recorded exactly once \((\d+) executions, \1 recorded, per attempt\)/,
  /✔ the cancelled job stopped, nothing promoted after its cancel \(#\d+ cancelled, 0 steps open, 0 promoted or retried after\)/,
  /✔ job outcomes follow the orchestrator's rules \(0 mismatched, the cancelled job aside\)/,
];

describe("stroem-db demo", () => {
  it("--url runs in a database of its own, passes its checks and drops the database", {
    timeout: 180_000,
  }, async () => {
    const { code, stdout, stderr } = await cli([
      "demo",
      "--url",
      adminUrl,
      "--jobs",
      "12",
      "--workers",
      "4",
      "--seed",
      "7",
    ]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    const database = /Using database (stroem_demo_[0-9a-f]+)/.exec(stdout)?.[1];
    expect(database).toBeDefined();
    expect(stdout).toMatch(/✔ every job is terminal \(12\/12, 1 cancelled\)/);
    for (const line of CHECKS) expect(stdout).toMatch(line);
    expect(stdout.split("\nChecks:\n")[1]?.trim().split("\n")).toHaveLength(CHECKS.length);
    expect(stdout).not.toMatch(/✘ (every|no|each|job|the)/);
    // The last job is cancelled once its checkout runs: the rest of it at once, the checkout by its worker.
    expect(stdout).toMatch(/^The last job \(#11\) is cancelled when its first step starts\.$/m);
    expect(stdout).toMatch(/^Cancelled job [0-9a-f-]{36} \(#11\): "cancelled by a user: a newer push is coming"\.$/m);
    expect(stdout).toMatch(
      /^ {2}8 steps cancelled at once; 1 running asked to stop: checkout( stopped by its worker|'s late outcome \((completed|failed)\) recorded, promoting nothing)/m,
    );
    const left = await withClient(adminUrl, (c) => c.query("select 1 from pg_database where datname = $1", [database]));
    expect(left.rowCount).toBe(0);
    // Seed 7: one step retried into success, one out of retries (the seed decides every attempt).
    expect(figures(stdout)).toEqual({
      "jobs completed": 6,
      "jobs failed": 5,
      "jobs cancelled": 1,
      "steps retried": 2,
      "then completed": 1,
      "out of retries": 1,
    });
    // The same seed gives the same outcome, whatever the number of workers.
    const again = await cli(["demo", "--url", adminUrl, "--jobs", "12", "--workers", "2", "--seed", "7"]);
    expect(again.code).toBe(0);
    expect(figures(again.stdout)).toEqual(figures(stdout));
  });

  // With STROEM_TEST_DATABASE_URL set, tests use that server and start none of their own.
  it.skipIf(ownServerOnly)(
    "with no flags, runs on an embedded PostgreSQL and removes it (skipped when STROEM_TEST_DATABASE_URL is set)",
    { timeout: 180_000 },
    async () => {
      const { code, stdout } = await cli(["demo"]);
      expect(code).toBe(0);
      const dir = /files in ([^)]+)\)/.exec(stdout)?.[1];
      expect(dir).toBeDefined();
      expect(stdout).toMatch(/✔ every job is terminal \(50\/50, 1 cancelled\)/);
      for (const line of CHECKS) expect(stdout).toMatch(line);
      expect(stdout).toMatch(/^Cancelled job [0-9a-f-]{36} \(#49\): /m);
      expect(stdout).toMatch(/A failed job, /);
      // The root README's figures (seed 42).
      expect(figures(stdout)).toEqual({
        "jobs completed": 33,
        "jobs failed": 16,
        "jobs cancelled": 1,
        "steps retried": 3,
        "then completed": 1,
        "out of retries": 2,
      });
      expect(existsSync(dir as string)).toBe(false);
    },
  );
});
