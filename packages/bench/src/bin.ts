#!/usr/bin/env node
import { writeFileSync } from "node:fs";
/**
 * `pnpm bench [--quick] [--out FILE] [--reps N] [--jobs N]`: prints the
 * comparison table to stdout (progress to stderr); exits 1 when a check
 * failed or a section broke, 2 on bad arguments. `pnpm bench --stats
 * [--stats-jobs N] [--reps N]` runs the metrics and search measurements
 * instead (`stats-bench.ts`).
 */
import { parseArgs } from "node:util";
import { type BenchOptions, DEFAULTS, QUICK, runBench } from "./bench.js";
import { runStatsBench, type StatsBenchOptions } from "./stats-bench.js";

function positiveInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`--${name} must be a positive integer, got "${value}"\n`);
    process.exit(2);
  }
  return n;
}

let args: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      out: { type: "string" },
      reps: { type: "string" },
      jobs: { type: "string" },
      only: { type: "string" },
      purge: { type: "boolean", default: false },
      "purge-only": { type: "boolean", default: false },
      "purge-jobs": { type: "string" },
      "purge-pause": { type: "string" },
      stats: { type: "boolean", default: false },
      "stats-jobs": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  }).values;
}
try {
  args = parse();
} catch (error) {
  process.stderr.write(
    `${(error as Error).message}\nusage: pnpm bench [--quick] [--out FILE] [--reps N] [--jobs N] [--only 1,2] [--purge | --purge-only] | --stats [--stats-jobs N] [--reps N]\n`,
  );
  process.exit(2);
}
if (args.help) {
  process.stdout.write(
    "usage: pnpm bench [--quick] [--out FILE] [--reps N] [--jobs N] [--only 1,2] [--purge | --purge-only] | --stats [--stats-jobs N] [--reps N]\n" +
      "  --quick     small sizes, checks exactly-once on both systems (under a minute)\n" +
      "  --out FILE  also write the markdown table to FILE\n" +
      "  --reps N    A B B A rounds per pair (default 2, 1 with --quick); with --stats, timed calls per read (default 7)\n" +
      "  --jobs N    flat-queue size (default 20,000)\n" +
      "  --only L    only these sections, by number, 1 to 10 (e.g. 1,5; 10: for_each loops)\n" +
      "  --purge     also section 7: claim/report latency during a purge of 1,000,000 finished jobs (long)\n" +
      "  --purge-only         section 7 alone\n" +
      "  --purge-jobs N       finished jobs to purge in section 7 (default 1,000,000)\n" +
      "  --purge-pause MS     purgeFinished's pause between batches in section 7 (default 20, purgeFinished's)\n" +
      "  --stats     instead: JobRepo.stats and search on 1,000,000 finished jobs and 5,000,000 steps,\n" +
      "              and the hot path with and without the search indexes or a rollup (~15 min)\n" +
      "  --stats-jobs N  history size for --stats (default 1,000,000)\n" +
      "Server: STROEM_BENCH_DATABASE_URL, else an embedded PostgreSQL with fsync on.\n",
  );
  process.exit(0);
}

if (args.stats) {
  const statsOptions: Partial<StatsBenchOptions> = {};
  const historyJobs = positiveInt("stats-jobs", args["stats-jobs"]);
  if (historyJobs) statsOptions.jobs = historyJobs;
  const statsReps = positiveInt("reps", args.reps);
  if (statsReps) statsOptions.reps = statsReps;
  if (process.env.STROEM_BENCH_DATABASE_URL) statsOptions.databaseUrl = process.env.STROEM_BENCH_DATABASE_URL;
  const result = await runStatsBench(statsOptions);
  await new Promise((done) => process.stdout.write(result.markdown, done));
  if (args.out) writeFileSync(args.out, result.markdown);
  if (result.failures.length > 0) {
    process.stderr.write(
      `\n${result.failures.length} problem(s):\n${result.failures.map((f) => `  ${f}`).join("\n")}\n`,
    );
    process.exitCode = 1;
  }
  process.exit();
}

const options: Partial<BenchOptions> = { quick: args.quick };
if (args.out) options.out = args.out;
const reps = positiveInt("reps", args.reps);
if (reps) options.reps = reps;
const jobs = positiveInt("jobs", args.jobs);
if (jobs) options.flatJobs = jobs;
if (args.only !== undefined) {
  const only = args.only.split(",").map((n) => Number(n.trim()));
  if (only.some((n) => !Number.isInteger(n) || n < 1 || n > 10)) {
    process.stderr.write(`--only takes section numbers 1 to 10, comma-separated, got "${args.only}"\n`);
    process.exit(2);
  }
  options.only = only;
}
if (args.purge || args["purge-only"] || args["purge-jobs"] || args["purge-pause"]) {
  const base = (args.quick ? QUICK : DEFAULTS).purge;
  const pause = args["purge-pause"] === "0" ? 0 : positiveInt("purge-pause", args["purge-pause"]);
  options.purge = {
    ...base,
    enabled: true,
    only: Boolean(args["purge-only"]),
    finished: positiveInt("purge-jobs", args["purge-jobs"]) ?? base.finished,
    pauseMs: pause ?? base.pauseMs,
  };
}
if (process.env.STROEM_BENCH_DATABASE_URL) options.databaseUrl = process.env.STROEM_BENCH_DATABASE_URL;

const result = await runBench(options);
process.stdout.write(result.markdown);
if (result.failures.length > 0) {
  process.stderr.write(
    `\n${result.failures.length} check(s) failed:\n${result.failures.map((f) => `  ${f}`).join("\n")}\n`,
  );
  process.exitCode = 1;
}
