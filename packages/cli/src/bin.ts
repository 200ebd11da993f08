#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
import { graphCommand, maintainCommand, migrateCommand, resolveUrl, statusCommand, type Target } from "./commands.js";
import { DEMO_PHASES, type DemoPhase, runDemo } from "./demo/index.js";
import { formatError, Interrupted } from "./errors.js";

// Signals first, before anything can start a server: SIGINT (Ctrl-C) and
// SIGTERM abort `interrupt`. The demo stops at whatever phase it is in and
// cleans up (server, its folder, the scratch database) before we exit with
// 130 or 143; the other commands hold nothing to clean up and exit at once.
// A second signal changes nothing: stopping is already under way, and
// quitting before it ends would leave the server and its folder behind.
const interrupt = new AbortController();
let cleansUp = false;
/** Set by `maintain` once it stopped on a signal: its normal end, exit 0. */
let stoppedCleanly = false;
const onSignal = (signal: "SIGINT" | "SIGTERM") => {
  if (interrupt.signal.aborted) return;
  const reason = new Interrupted(signal);
  interrupt.abort(reason);
  if (!cleansUp) {
    process.stderr.write(`\nstroem-db: ${reason.message}\n`);
    process.exit(reason.exitCode);
  }
  process.stderr.write(`\nstroem-db: ${reason.message}: stopping and cleaning up…\n`);
};
process.on("SIGINT", () => onSignal("SIGINT"));
process.on("SIGTERM", () => onSignal("SIGTERM"));

const say = (s = "") => process.stdout.write(`${s}\n`);
const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
  version: string;
};

function integer(min: number, max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max)
      throw new InvalidArgumentError(`must be an integer from ${min} to ${max}`);
    return n;
  };
}

function seconds(value: string) {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0 || n > 86_400)
    throw new InvalidArgumentError("must be a number of seconds from 0 to 86400");
  return n;
}

function fraction(value: string) {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0 || n > 1)
    throw new InvalidArgumentError("must be a number from 0 to 1");
  return n;
}

/** The URL a failing command was using, so connection errors can name the server. */
let urlInUse: string | undefined;
function databaseUrl(flag: string | undefined): string {
  urlInUse = resolveUrl(flag);
  return urlInUse;
}

/** The operators' commands' connection: `--url` (or DATABASE_URL), and `--pooler` for PgBouncer in transaction mode. */
function target(opts: { url?: string; pooler?: boolean }): Target {
  return { url: databaseUrl(opts.url), ...(opts.pooler ? { pooler: "transaction" as const } : {}) };
}

const program = new Command()
  .name("stroem-db")
  .description("Strøm's database layer: run the demo, migrate a database, watch the queue.")
  .version(version)
  .showHelpAfterError("(run with --help for usage)")
  .configureOutput({ outputError: (str, write) => write(str) });

program
  .command("demo")
  .description(
    "Run CI/CD pipeline jobs with concurrent workers on an embedded PostgreSQL (or --url), then check the database.",
  )
  .addOption(new Option("--jobs <n>", "jobs to create").default(50).argParser(integer(1, 10_000)))
  .addOption(
    new Option("--workers <n>", "concurrent workers, each with its own connections")
      .default(8)
      .argParser(integer(1, 64)),
  )
  .addOption(new Option("--fail-rate <p>", "probability that a step fails").default(0.05).argParser(fraction))
  .addOption(
    new Option("--seed <n>", "seed for failures and durations (reproducible)")
      .default(42)
      .argParser(integer(0, 2 ** 31 - 1)),
  )
  .option(
    "--url <url>",
    "use this server instead of an embedded one (the demo works in its own database there and drops it)",
  )
  .action(async (opts: { jobs: number; workers: number; failRate: number; seed: number; url?: string }) => {
    urlInUse = opts.url;
    cleansUp = true;
    // Test seam (see DemoOptions.holdAt): STROEM_TEST_DEMO_HOLD=<phase>.
    const hold = process.env.STROEM_TEST_DEMO_HOLD as DemoPhase | undefined;
    const holdAt = hold && (DEMO_PHASES as readonly string[]).includes(hold) ? hold : undefined;
    const report = await runDemo({ ...opts, out: process.stdout, signal: interrupt.signal, holdAt });
    process.exitCode = report.ok ? 0 : 1;
  });

program
  .command("migrate")
  .description("Apply the committed migrations (DATABASE_URL by default) and print what was applied.")
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .option("--pooler", "the URL is a transaction pooler (PgBouncer in transaction mode)")
  .action(async (opts: { url?: string; pooler?: boolean }) => migrateCommand(target(opts), say));

program
  .command("status")
  .description("Workers (alive or stale), jobs by status, and ready steps by action type.")
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .option("--pooler", "the URL is a transaction pooler (PgBouncer in transaction mode)")
  .addOption(
    new Option("--stale-after <seconds>", "a worker is stale after this long without a heartbeat")
      .default(30)
      .argParser(integer(1, 86_400)),
  )
  .action(async (opts: { url?: string; pooler?: boolean; staleAfter: number }) =>
    statusCommand(target(opts), opts.staleAfter * 1000, say),
  );

program
  .command("graph")
  .description("Draw a job's DAG with step statuses.")
  .argument("<jobId>", "the job's id")
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .option("--pooler", "the URL is a transaction pooler (PgBouncer in transaction mode)")
  .addOption(new Option("--format <format>", "output format").choices(["text", "mermaid"]).default("text"))
  .action(async (jobId: string, opts: { url?: string; pooler?: boolean; format: "text" | "mermaid" }) =>
    graphCommand(target(opts), jobId, opts.format, say),
  );

program
  .command("maintain")
  .description(
    "Run the maintenance sweeps (rescue of dead workers' steps, timeouts, inactive workers) until Ctrl-C or SIGTERM; a line per sweep that did something.",
  )
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .option("--pooler", "the URL is a transaction pooler (PgBouncer in transaction mode)")
  .addOption(
    new Option("--stale-after <seconds>", "rescue the steps of workers silent this long")
      .default(30)
      .argParser(seconds),
  )
  .addOption(
    new Option("--rescue-every <seconds>", "how often the rescue runs (0: never)").default(5).argParser(seconds),
  )
  .addOption(
    new Option("--timeouts-every <seconds>", "how often timeouts are enforced (0: never)")
      .default(5)
      .argParser(seconds),
  )
  .addOption(
    new Option("--inactive-after <seconds>", "mark workers silent this long inactive").default(300).argParser(seconds),
  )
  .addOption(
    new Option("--inactive-every <seconds>", "how often workers are marked inactive (0: never)")
      .default(60)
      .argParser(seconds),
  )
  .addOption(
    new Option("--max-rescues <n>", "free rescues per step before a rescue spends its retries")
      .default(3)
      .argParser(integer(0, 1000)),
  )
  .action(
    async (opts: {
      url?: string;
      pooler?: boolean;
      staleAfter: number;
      rescueEvery: number;
      timeoutsEvery: number;
      inactiveAfter: number;
      inactiveEvery: number;
      maxRescues: number;
    }) => {
      cleansUp = true;
      const ms = (s: number) => Math.round(s * 1000);
      await maintainCommand(
        target(opts),
        {
          staleAfterMs: Math.max(1, ms(opts.staleAfter)),
          rescueEveryMs: ms(opts.rescueEvery),
          timeoutsEveryMs: ms(opts.timeoutsEvery),
          inactiveAfterMs: Math.max(1, ms(opts.inactiveAfter)),
          inactiveEveryMs: ms(opts.inactiveEvery),
          maxRescues: opts.maxRescues,
        },
        interrupt.signal,
        say,
        (s) => process.stderr.write(`${s}\n`),
      );
      // A signal is how maintenance is meant to end: a clean stop exits 0.
      stoppedCleanly = true;
    },
  );

try {
  await program.parseAsync();
} catch (error) {
  // One clear line, never a stack trace (set STROEM_DEBUG=1 for one). An
  // interrupt was announced when it arrived.
  if (!interrupt.signal.aborted) {
    process.stderr.write(`stroem-db: ${formatError(error, urlInUse)}\n`);
    if (process.env.STROEM_DEBUG) console.error(error);
  }
  process.exitCode = 1;
}
if (interrupt.signal.aborted && !stoppedCleanly) process.exitCode = (interrupt.signal.reason as Interrupted).exitCode;
