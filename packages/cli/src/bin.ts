#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from "commander";
import { CliError, graphCommand, migrateCommand, resolveUrl, statusCommand } from "./commands.js";
import { runDemo } from "./demo.js";

const say = (s = "") => process.stdout.write(`${s}\n`);

function integer(min: number, max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max)
      throw new InvalidArgumentError(`must be an integer from ${min} to ${max}`);
    return n;
  };
}

function fraction(value: string) {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0 || n > 1)
    throw new InvalidArgumentError("must be a number from 0 to 1");
  return n;
}

const program = new Command()
  .name("stroem-db")
  .description("Strøm's database layer: run the demo, migrate a database, watch the queue.")
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
    const interrupt = new AbortController();
    const onSigint = () => {
      if (interrupt.signal.aborted) process.exit(130);
      process.stderr.write(
        "\nInterrupted: letting workers finish their step and cleaning up (Ctrl-C again to quit now)…\n",
      );
      interrupt.abort();
    };
    process.on("SIGINT", onSigint);
    try {
      const report = await runDemo({ ...opts, out: process.stdout, signal: interrupt.signal });
      process.exitCode = report.interrupted ? 130 : report.ok ? 0 : 1;
    } finally {
      process.off("SIGINT", onSigint);
    }
  });

program
  .command("migrate")
  .description("Apply the committed migrations (DATABASE_URL by default) and print what was applied.")
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .action(async (opts: { url?: string }) => migrateCommand(resolveUrl(opts.url), say));

program
  .command("status")
  .description("Workers (alive or stale), jobs by status, and ready steps by action type.")
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .addOption(
    new Option("--stale-after <seconds>", "a worker is stale after this long without a heartbeat")
      .default(30)
      .argParser(integer(1, 86_400)),
  )
  .action(async (opts: { url?: string; staleAfter: number }) =>
    statusCommand(resolveUrl(opts.url), opts.staleAfter * 1000, say),
  );

program
  .command("graph")
  .description("Draw a job's DAG with step statuses.")
  .argument("<jobId>", "the job's id")
  .option("--url <url>", "database URL (default: DATABASE_URL)")
  .addOption(new Option("--format <format>", "output format").choices(["text", "mermaid"]).default("text"))
  .action(async (jobId: string, opts: { url?: string; format: "text" | "mermaid" }) =>
    graphCommand(resolveUrl(opts.url), jobId, opts.format, say),
  );

try {
  await program.parseAsync();
} catch (error) {
  // One clear line, never a stack trace (set STROEM_DEBUG=1 for one).
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(
    `stroem-db: ${error instanceof CliError ? "" : `${(error as Error)?.name ?? "error"}: `}${message}\n`,
  );
  if (process.env.STROEM_DEBUG) console.error(error);
  process.exitCode = 1;
}
