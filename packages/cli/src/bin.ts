#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { InvalidRangeError, JobRepo } from "@stroem/repos";
import { JOB_STATUSES, type JobStatus, SOURCE_TYPES, type SourceType } from "@stroem/schema";
import { Command, InvalidArgumentError, Option } from "commander";
import {
  graphCommand,
  jobsCommand,
  maintainCommand,
  migrateCommand,
  purgeCommand,
  resolveUrl,
  statsCommand,
  statusCommand,
  type Target,
} from "./commands.js";
import { DEMO_PHASES, type DemoPhase, runDemo } from "./demo/index.js";
import { formatError, Interrupted } from "./errors.js";
import { parseAge } from "./format.js";

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

function ageArg(value: string) {
  const ms = parseAge(value);
  if (ms === undefined) throw new InvalidArgumentError("must be a number and a unit: 30d, 12h, 90m or 45s");
  return ms;
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
  .description(
    "Workers (alive or stale), jobs by status, ready steps by action type, and what is stuck: running steps of stale or inactive workers, the oldest running steps, ready steps no live worker can take.",
  )
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .option("--pooler", "the URL is a transaction pooler (PgBouncer in transaction mode)")
  .addOption(
    new Option("--stale-after <seconds>", "a worker is stale after this long without a heartbeat")
      .default(30)
      .argParser(integer(1, 86_400)),
  )
  .addOption(
    new Option("--limit <n>", "rows in each list of the stuck section").default(10).argParser(integer(1, 1000)),
  )
  .addOption(new Option("--format <format>", "output format").choices(["table", "json"]).default("table"))
  .action(
    async (opts: { url?: string; pooler?: boolean; staleAfter: number; limit: number; format: "table" | "json" }) =>
      statusCommand(
        target(opts),
        { staleAfterMs: opts.staleAfter * 1000, limit: opts.limit, format: opts.format },
        say,
      ),
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
  .command("purge")
  .description(
    "Remove finished jobs (and their steps) and audit events older than an age, in small batches; print the counts.",
  )
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .option("--pooler", "the URL is a transaction pooler (PgBouncer in transaction mode)")
  .addOption(
    new Option("--older-than <age>", "finished jobs whose completed_at is older than this (30d, 12h, 90m, 45s)")
      .makeOptionMandatory()
      .argParser(ageArg),
  )
  .addOption(
    new Option("--audit-older-than <age>", "audit events older than this (default: --older-than)").argParser(ageArg),
  )
  .addOption(
    new Option("--batch-size <n>", "rows per batch, each its own transaction")
      .default(1000)
      .argParser(integer(1, 10_000)),
  )
  .addOption(
    new Option("--max-batches <n>", "stop after this many batches of each kind").argParser(integer(1, 2 ** 31 - 1)),
  )
  .action(
    async (opts: {
      url?: string;
      pooler?: boolean;
      olderThan: number;
      auditOlderThan?: number;
      batchSize: number;
      maxBatches?: number;
    }) =>
      purgeCommand(
        target(opts),
        {
          olderThanMs: opts.olderThan,
          batchSize: opts.batchSize,
          ...(opts.auditOlderThan === undefined ? {} : { auditOlderThanMs: opts.auditOlderThan }),
          ...(opts.maxBatches === undefined ? {} : { maxBatches: opts.maxBatches }),
        },
        say,
      ),
  );

/** `now`, or a date / date-time Date.parse reads (ISO 8601: `2026-11-20`, `2026-11-20T12:00Z`). */
function instant(value: string): Date {
  const d = value === "now" ? new Date() : new Date(value);
  if (value.trim() === "" || Number.isNaN(d.getTime()))
    throw new InvalidArgumentError('must be "now" or an ISO date or date-time (2026-11-20, 2026-11-20T12:00Z)');
  return d;
}

function bucketArg(value: string): string {
  try {
    JobRepo.parseBucket(value);
  } catch {
    throw new InvalidArgumentError('must be a duration such as "30s", "15m", "1h" or "1d"');
  }
  return value;
}

/** A repeatable, comma-separated option of known values: `--status failed,cancelled --status pending`. */
function oneOf<T extends string>(allowed: readonly T[]) {
  return (value: string, previous: T[] | undefined): T[] => {
    const values = value.split(",").map((v) => v.trim());
    for (const v of values)
      if (!(allowed as readonly string[]).includes(v)) throw new InvalidArgumentError(`must be ${allowed.join(", ")}`);
    return [...(previous ?? []), ...(values as T[])];
  };
}

/** A repeatable option of free text (`--task deploy --task lint`). */
function many(value: string, previous: string[] | undefined): string[] {
  if (value.trim() === "") throw new InvalidArgumentError("must not be empty");
  return [...(previous ?? []), value];
}

function cursorArg(value: string): string {
  try {
    JobRepo.decodeCursor(value);
  } catch {
    throw new InvalidArgumentError("must be a cursor printed by an earlier `stroem-db jobs`");
  }
  return value;
}

program
  .command("jobs")
  .description(
    "List jobs newest first (JobRepo.search's filters), a page at a time: the ids `graph` takes. Only reads (a hot standby's URL works).",
  )
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .option("--pooler", "the URL is a transaction pooler (PgBouncer in transaction mode)")
  .option("--workspace <name>", "one workspace (default: every workspace)")
  .addOption(new Option("--task <name>", "a task name, exact (repeat for any of several)").argParser(many))
  .addOption(
    new Option("--status <status>", `${JOB_STATUSES.join(", ")} (comma-separated or repeated: any of them)`).argParser(
      oneOf(JOB_STATUSES),
    ),
  )
  .addOption(
    new Option("--source <type>", `${SOURCE_TYPES.join(", ")} (comma-separated or repeated: any of them)`).argParser(
      oneOf(SOURCE_TYPES),
    ),
  )
  .option(
    "--text <query>",
    "words in the task name, the input's values or a step's error (web-search syntax: deploy -staging \"exit 137\")",
  )
  .addOption(new Option("--from <when>", "created at or after (now, or an ISO date or date-time)").argParser(instant))
  .addOption(new Option("--to <when>", "created before").argParser(instant))
  .addOption(new Option("--limit <n>", "jobs per page").default(20).argParser(integer(1, 1000)))
  .addOption(new Option("--cursor <cursor>", "the next page's cursor, printed under a page").argParser(cursorArg))
  .addOption(new Option("--format <format>", "output format").choices(["table", "json"]).default("table"))
  .action(
    async (opts: {
      url?: string;
      pooler?: boolean;
      workspace?: string;
      task?: string[];
      status?: JobStatus[];
      source?: SourceType[];
      text?: string;
      from?: Date;
      to?: Date;
      limit: number;
      cursor?: string;
      format: "table" | "json";
    }) => {
      // Checked before connecting, named by the flags.
      if (opts.from && opts.to && opts.from >= opts.to) throw new InvalidRangeError("--from", "must be before --to");
      await jobsCommand(
        target(opts),
        {
          ...(opts.workspace === undefined ? {} : { workspace: opts.workspace }),
          ...(opts.task === undefined ? {} : { taskNames: opts.task }),
          ...(opts.status === undefined ? {} : { statuses: opts.status }),
          ...(opts.source === undefined ? {} : { sourceTypes: opts.source }),
          ...(opts.text === undefined ? {} : { text: opts.text }),
          ...(opts.from === undefined ? {} : { from: opts.from }),
          ...(opts.to === undefined ? {} : { to: opts.to }),
          ...(opts.cursor === undefined ? {} : { cursor: opts.cursor }),
          limit: opts.limit,
          format: opts.format,
        },
        say,
      );
    },
  );

program
  .command("stats")
  .description(
    "Job metrics over the jobs created in [--from, --to): counts per status, duration and queue-wait percentiles, failure rate per task, throughput. Only reads (a hot standby's URL works).",
  )
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .option("--pooler", "the URL is a transaction pooler (PgBouncer in transaction mode)")
  .option("--workspace <name>", "one workspace (default: every workspace)")
  .option("--task <name>", "one task name (default: every task)")
  .addOption(new Option("--from <when>", "window start (default: 24 hours before --to)").argParser(instant))
  .addOption(new Option("--to <when>", 'window end, exclusive (default: "now")').argParser(instant))
  .addOption(new Option("--bucket <duration>", "throughput bucket").default("1h").argParser(bucketArg))
  .addOption(new Option("--format <format>", "output format").choices(["table", "json"]).default("table"))
  .action(
    async (opts: {
      url?: string;
      pooler?: boolean;
      workspace?: string;
      task?: string;
      from?: Date;
      to?: Date;
      bucket: string;
      format: "table" | "json";
    }) => {
      const to = opts.to ?? new Date();
      const from = opts.from ?? new Date(to.getTime() - 86_400_000);
      await statsCommand(
        target(opts),
        {
          ...(opts.workspace === undefined ? {} : { workspace: opts.workspace }),
          ...(opts.task === undefined ? {} : { taskName: opts.task }),
          from,
          to,
          bucket: opts.bucket,
          format: opts.format,
        },
        say,
      );
    },
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
  .addOption(
    new Option(
      "--purge-older-than <age>",
      "also run the retention purge: finished jobs and audit events older than this (30d, 12h, 90m, 45s)",
    ).argParser(ageArg),
  )
  .addOption(
    new Option("--purge-every <seconds>", "how often the purge runs (with --purge-older-than)")
      .default(600)
      .argParser(seconds),
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
      purgeOlderThan?: number;
      purgeEvery: number;
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
          ...(opts.purgeOlderThan === undefined
            ? {}
            : { purge: { olderThanMs: opts.purgeOlderThan }, purgeEveryMs: Math.max(1, ms(opts.purgeEvery)) }),
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
