import { expect, test } from "vitest";
import { runBench } from "../src/index.js";

/**
 * `pnpm bench --quick` as a test: both systems run every section at small
 * sizes and every job must be done exactly once. On STROEM_TEST_DATABASE_URL
 * when set (scratch databases are created there and dropped), else on its
 * own embedded PostgreSQL. About 15 s on 2 idle cores; the budget leaves
 * room for 2 busy ones.
 */
test("quick bench: every job done exactly once on both systems", { timeout: 120_000 }, async () => {
  const lines: string[] = [];
  const result = await runBench({
    quick: true,
    databaseUrl: process.env.STROEM_TEST_DATABASE_URL || undefined,
    log: (line) => lines.push(line),
  });
  expect(result.failures, lines.join("\n")).toEqual([]);
  expect(result.markdown).toContain("Exactly-once checks: all passed");
  for (const section of ["1a.", "1b.", "2.", "3.", "4.", "5.", "6."]) {
    expect(result.markdown).toContain(`| ${section}`);
  }
});
