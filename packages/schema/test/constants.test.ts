import { readdirSync, readFileSync } from "node:fs";
import { getTableConfig } from "drizzle-orm/pg-core";
import { describe, expect, it } from "vitest";
import {
  ACTION_TYPES,
  CONSTRAINTS,
  isJobTerminal,
  isStepTerminal,
  JOB_MODES,
  JOB_STATUSES,
  job,
  jobLive,
  jobResult,
  jobStep,
  MIGRATIONS_FOLDER,
  SERVER_ACTION_TYPES,
  SOURCE_TYPES,
  STEP_STATUSES,
  stepLive,
  stepResult,
  WORKER_ACTION_TYPES,
  WORKER_STATUSES,
  worker,
} from "../src/index.js";

/** Every CREATE/ALTER in the committed migrations, concatenated. */
const migrationSql = readdirSync(MIGRATIONS_FOLDER)
  .filter((f) => f.endsWith(".sql"))
  .map((f) => readFileSync(`${MIGRATIONS_FOLDER}/${f}`, "utf8"))
  .join("\n");

describe("status constants", () => {
  it.each([
    ["worker_status_check", WORKER_STATUSES],
    ["job_mode_check", JOB_MODES],
    ["job_status_check", JOB_STATUSES],
    ["job_source_type_check", SOURCE_TYPES],
    ["job_step_action_type_check", ACTION_TYPES],
    ["job_step_status_check", STEP_STATUSES],
  ])("%s in the committed migrations allows exactly the constant's values", (name, values) => {
    // The latest definition: a later migration may drop and re-add it (0006 added `cancelled`).
    const line = migrationSql
      .split("\n")
      .filter((l) => l.includes(`"${name}" CHECK`))
      .at(-1);
    expect(line, name).toBeDefined();
    const allowed = [...(line?.match(/in \(([^)]*)\)/)?.[1] ?? "").matchAll(/'([^']*)'/g)].map((m) => m[1]);
    expect(allowed).toEqual([...values]);
  });

  it("the server's action types are those 45_gates.sql suspends and 47_server_steps.sql starts children of, and the rest are the workers'", () => {
    const gates = readFileSync(new URL("../sql/45_gates.sql", import.meta.url), "utf8");
    const listed = gates.match(/action_type NOT IN \(([^)]*)\)/)?.[1] ?? "";
    const server = readFileSync(new URL("../sql/47_server_steps.sql", import.meta.url), "utf8");
    const task = server.match(/v_step\.action_type <> '([a-z]+)'/)?.[1];
    expect([...listed.split(",").map((v) => v.trim().replace(/'/g, "")), task]).toEqual([...SERVER_ACTION_TYPES]);
    expect([...WORKER_ACTION_TYPES, ...SERVER_ACTION_TYPES].sort()).toEqual([...ACTION_TYPES].sort());
  });

  it("each table declares its CHECK constraints", () => {
    expect(getTableConfig(worker).checks.map((c) => c.name)).toEqual(["worker_status_check"]);
    expect(getTableConfig(job).checks.map((c) => c.name)).toEqual([
      "job_mode_check",
      "job_source_type_check",
      "job_timeout_secs_check",
      "job_lineage_check",
      "job_parent_check",
    ]);
    expect(getTableConfig(jobLive).checks.map((c) => c.name)).toEqual([
      "job_live_status_check",
      "job_live_step_counts_check",
    ]);
    expect(getTableConfig(jobResult).checks.map((c) => c.name)).toEqual(["job_result_status_check"]);
    expect(getTableConfig(jobStep).checks.map((c) => c.name)).toEqual([
      "job_step_action_type_check",
      "job_step_retry_strategy_check",
      "job_step_timeout_secs_check",
      "job_step_retry_policy_check",
      "job_step_loop_check",
    ]);
    expect(getTableConfig(stepLive).checks.map((c) => c.name)).toEqual([
      "step_live_status_check",
      "step_live_ready_at_check",
      "step_live_running_check",
      "step_live_completed_at_check",
      "step_live_suspended_check",
      "step_live_counts_check",
    ]);
    expect(getTableConfig(stepResult).checks.map((c) => c.name)).toEqual(["step_result_status_check"]);
  });

  it("names the constraints the repos translate as the tables declare them", () => {
    const fks = [job, jobLive, jobStep, stepLive].flatMap((t) =>
      getTableConfig(t).foreignKeys.map((fk) => fk.getName()),
    );
    expect(fks.sort()).toEqual(
      [
        CONSTRAINTS.jobWorkerFk,
        CONSTRAINTS.jobSourceFk,
        CONSTRAINTS.jobRetryOfFk,
        CONSTRAINTS.jobParentFk,
        CONSTRAINTS.stepJobFk,
        CONSTRAINTS.stepWorkerFk,
      ].sort(),
    );
    // The result tables carry no foreign key (the checks would lock the job's rows on every report).
    expect([jobResult, stepResult].flatMap((t) => getTableConfig(t).foreignKeys)).toEqual([]);
    expect(getTableConfig(jobStep).primaryKeys.map((pk) => pk.getName())).toEqual([CONSTRAINTS.stepPk]);
    for (const name of Object.values(CONSTRAINTS)) expect(migrationSql).toContain(`"${name}"`);
  });

  it("tells terminal statuses", () => {
    expect(STEP_STATUSES.filter(isStepTerminal)).toEqual(["completed", "failed", "skipped", "cancelled"]);
    expect(JOB_STATUSES.filter(isJobTerminal)).toEqual(["completed", "failed", "cancelled"]);
  });

  it("ships the migrations folder with a journal", () => {
    expect(readdirSync(`${MIGRATIONS_FOLDER}/meta`)).toContain("_journal.json");
  });
});
