#!/usr/bin/env node
/**
 * `pnpm chaos [--jobs N] [--workers N] [--duration S] [--kill-rate R]
 * [--terminate-rate R] [--restarts N] [--seed N] [--budget S]`: the chaos
 * run at a larger size than the suite's (test/chaos.test.ts), on an embedded
 * PostgreSQL of its own; prints a summary table; exits 1 when a check
 * failed, 2 on bad arguments. `STROEM_CHAOS_SEED` replays a seed.
 */
import { parseArgs } from "node:util";
import { CHAOS_DEFAULTS, type ChaosOptions, chaosTable, runChaos } from "./run.js";

const USAGE = `usage: pnpm chaos [options]
  --jobs N            jobs of 6 steps (a diamond and a join), default 1000
  --workers N         worker processes at once, default 6
  --duration S        create the jobs in waves over S seconds, default 30
  --kill-rate R       workers SIGKILLed per 1,000 steps, default 5
  --terminate-rate R  backends terminated per 1,000 steps, default 10
  --restarts N        server restarts, default 2
  --no-crash          restart with a fast shutdown on a server with fsync off (default: as a crash, durable server)
  --seed N            seed of every random choice (default: STROEM_CHAOS_SEED, else random)
  --budget S          fail if not finished within S seconds, default 600
`;

function number(name: string, value: string | undefined, min: number, integer = true): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
    process.stderr.write(
      `--${name} must be ${integer ? "an integer" : "a number"} >= ${min}, got "${value}"\n${USAGE}`,
    );
    process.exit(2);
  }
  return n;
}

let values: Record<string, string | boolean | undefined>;
try {
  values = parseArgs({
    options: {
      jobs: { type: "string" },
      workers: { type: "string" },
      duration: { type: "string" },
      "kill-rate": { type: "string" },
      "terminate-rate": { type: "string" },
      restarts: { type: "string" },
      seed: { type: "string" },
      budget: { type: "string" },
      "no-crash": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  }).values;
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const str = (k: string) => values[k] as string | undefined;
const seed = number("seed", str("seed") ?? process.env.STROEM_CHAOS_SEED, 0) ?? Math.floor(Math.random() * 2 ** 31);
const options: Partial<ChaosOptions> = {
  jobs: number("jobs", str("jobs"), 1) ?? 1000,
  workers: number("workers", str("workers"), 1) ?? 6,
  durationSecs: number("duration", str("duration"), 0, false) ?? 30,
  killRate: number("kill-rate", str("kill-rate"), 0, false) ?? 5,
  terminateRate: number("terminate-rate", str("terminate-rate"), 0, false) ?? 10,
  restarts: number("restarts", str("restarts"), 0) ?? 2,
  budgetMs: (number("budget", str("budget"), 1, false) ?? 600) * 1000,
  maxStepMs: CHAOS_DEFAULTS.maxStepMs,
  crash: !values["no-crash"],
  seed,
  log: (line) => process.stderr.write(`${line}\n`),
};
process.stderr.write(`chaos: seed ${seed} (replay: STROEM_CHAOS_SEED=${seed} pnpm chaos …same flags)\n`);
const result = await runChaos(options);
process.stdout.write(`${chaosTable(result)}\n`);
if (result.failures.length > 0) {
  process.stderr.write(
    `\n${result.failures.length} check(s) failed (seed ${seed}):\n${result.failures.map((f) => `  ${f}`).join("\n")}\n`,
  );
  process.exitCode = 1;
}
