import { createPool, runMigrations } from "@stroem/repos";
import { afterAll, beforeAll, expect, test } from "vitest";
import { runBench } from "../src/index.js";
import { checkAllDone } from "../src/scenarios.js";
import { FLAT, seedJobs } from "../src/seed.js";
import { type BenchServer, createDatabase, dropDatabase, openServer, withDatabase } from "../src/server.js";

// STROEM_TEST_DATABASE_URL when set (scratch databases are created there and dropped), else an embedded server.
let server: BenchServer;
beforeAll(async () => {
  server = await openServer(process.env.STROEM_TEST_DATABASE_URL || undefined);
}, 60_000);
afterAll(() => server?.stop());

/**
 * `pnpm bench --quick` as a test: both systems run every section at small
 * sizes and every job must be done exactly once. About 30 s on 2 cores
 * run alone, 35–50 s inside the whole suite, plus about 10 s for section
 * 10 (for_each loops); the budget leaves room for 2 busy ones.
 */
test("quick bench: every job done exactly once on both systems", { timeout: 180_000 }, async () => {
  const lines: string[] = [];
  const result = await runBench({ quick: true, databaseUrl: server.adminUrl, log: (line) => lines.push(line) });
  expect(result.failures, lines.join("\n")).toEqual([]);
  expect(result.markdown).toContain("Exactly-once checks: all passed");
  for (const section of [
    ...["1a.", "1b.", "1c.", "2.", "3.", "4.", "5.", "6.", "7.", "8a.", "8b.", "8c.", "8d.", "9."],
    ...["10a.", "10b.", "10c.", "10d.", "10e."],
  ]) {
    expect(result.markdown).toContain(`| ${section}`);
  }
});

test("the exactly-once check reports jobs that were not worked", { timeout: 60_000 }, async () => {
  const name = `stroem_bench_check_${process.pid}`;
  await createDatabase(server.adminUrl, name);
  const db = createPool(withDatabase(server.adminUrl, name), { max: 1 });
  try {
    await runMigrations(db);
    await seedJobs(db, 3, FLAT);
    const problems = await checkAllDone(withDatabase(server.adminUrl, name), 3, 3);
    expect(problems).toEqual(["0/3 steps completed", "steps not completed: 3 ready", "0/3 jobs completed"]);
  } finally {
    await db.$client.end();
    await dropDatabase(server.adminUrl, name);
  }
});
