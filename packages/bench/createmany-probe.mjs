// Temporary probe (not committed): CREATE_JOBS with and without the audit CTE, A B B A on fresh DBs.
import { randomUUID } from "node:crypto";
import { createDatabaseFromTemplate, startEmbeddedPostgres, withClient, withDatabase } from "@stroem/embedded-pg";
import { createPool, runMigrations } from "@stroem/repos";
import { CREATE_JOBS, runStatement } from "@stroem/repos/internal";

const oldText = CREATE_JOBS.text.replace(/, audit as \([\s\S]*?from jobs j\s*\)/, "");
if (oldText === CREATE_JOBS.text || /audit_event/.test(oldText)) throw new Error("regex failed");
const OLD = {
  name: "stroem_create_jobs_old",
  text: oldText.replace("$4", "$2"),
  params: [CREATE_JOBS.params[0], CREATE_JOBS.params[3]],
};
const server = await startEmbeddedPostgres({ fast: false });
const n = Number(process.argv[2] ?? 20000),
  per = 1000;
try {
  await withClient(server.url, (c) => c.query("create database tpl"));
  const t = createPool(withDatabase(server.url, "tpl"), { max: 1 });
  await runMigrations(t);
  await t.$client.end();
  const res = { with: [], without: [] };
  let k = 0;
  for (const side of ["with", "without", "without", "with", "with", "without", "without", "with"]) {
    const name = `m${k++}`;
    await createDatabaseFromTemplate(server.url, name, "tpl");
    const db = createPool(withDatabase(server.url, name), { max: 1, statementTimeoutMs: 0 });
    await db.execute("select 1");
    const t0 = performance.now();
    for (let i = 0; i < n; i += per) {
      const jobs = Array.from({ length: per }, (_, j) => ({
        job_id: randomUUID(),
        workspace: "default",
        task_name: "t",
        mode: "distributed",
        input: { i: i + j },
        source_type: "api",
        source_id: null,
        revision: null,
        timeout_secs: null,
        steps_unfinished: 1,
      }));
      const steps = jobs.map((j) => ({
        job_id: j.job_id,
        step_name: "s",
        action_name: "run",
        action_type: "shell",
        action_image: null,
        action_spec: null,
        input: null,
        status: "ready",
        depends_on: [],
        continue_on_failure: false,
        dependants: [],
        deps_unfinished: 0,
        max_retries: 0,
        retry_backoff_secs: 10,
        retry_strategy: "exponential",
        retry_jitter: 0,
        timeout_secs: null,
      }));
      const v = { jobs: JSON.stringify(jobs), steps: JSON.stringify(steps), actorType: "system", actorId: null };
      await runStatement(db, side === "with" ? CREATE_JOBS : OLD, v);
    }
    res[side].push(Math.round(n / ((performance.now() - t0) / 1000)));
    await db.$client.end();
  }
  const med = (a) => {
    const s = [...a].sort((x, y) => x - y);
    return (s[1] + s[2]) / 2;
  };
  console.log(
    `insert statement jobs/s (${n} one-step jobs, ${per} a call, A B B A x2): with audit ${res.with.join(", ")} (median ${med(res.with)}); without ${res.without.join(", ")} (median ${med(res.without)}); ratio ${(med(res.with) / med(res.without)).toFixed(2)}`,
  );
} finally {
  await server.stop();
}
