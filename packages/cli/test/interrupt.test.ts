import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { withClient } from "@stroem/embedded-pg";
import { afterAll, describe, expect, inject, it } from "vitest";
import type { DemoPhase } from "../src/demo/index.js";

// SIGINT and SIGTERM at every phase of the demo: the built CLI in a child
// whose TMPDIR is the test's own, so we see everything the run leaves behind.

const BIN = fileURLToPath(new URL("../dist/bin.js", import.meta.url));
const { adminUrl } = inject("stroemPg");
const ownServerOnly = Boolean(process.env.STROEM_TEST_DATABASE_URL);
const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Processes whose command line mentions `dir` (initdb and the postmaster name their data directory). */
function mentioning(dir: string): number[] {
  return readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir);
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

/** Processes in any of these sessions (the server's children keep their postmaster's session). */
function inSessions(sessions: ReadonlySet<number>): number[] {
  return readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        const session = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[3]);
        return sessions.has(session);
      } catch {
        return false;
      }
    })
    .map(Number);
}

interface Case {
  args: string[];
  /** Signal once stdout matches this (and `ready`, if given, holds). */
  after: RegExp;
  ready?: (tmp: string) => boolean;
  holdAt?: DemoPhase;
  signals: Array<"SIGINT" | "SIGTERM">;
}

async function interrupt(c: Case) {
  const tmp = await mkdtemp(path.join(tmpdir(), "stroem-cli-signal-"));
  await chmod(tmp, 0o755); // as root, the server user works in here
  dirs.push(tmp);
  const child: ChildProcess = spawn(process.execPath, [BIN, "demo", ...c.args], {
    env: { ...process.env, TMPDIR: tmp, DATABASE_URL: undefined, STROEM_TEST_DEMO_HOLD: c.holdAt },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let exitCode: number | null | undefined;
  void exited.then((code) => {
    exitCode = code;
  });
  await waitFor(`${c.after} in the demo's output`, () => {
    if (exitCode !== undefined) throw new Error(`the demo exited (${exitCode}) first:\n${stdout}\n${stderr}`);
    return c.after.test(stdout) && (c.ready?.(tmp) ?? true);
  });
  const sessions = new Set(mentioning(tmp));
  for (const signal of c.signals) child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const code = await exited;
  clearTimeout(timer);
  // Whatever the run started is gone: its folder at once, its processes within a deadline.
  const leftovers = (await readdir(tmp)).filter((e) => e.startsWith("stroem-pg-"));
  await waitFor(
    "the run's postgres processes to exit",
    () => [...mentioning(tmp), ...inSessions(sessions)].length === 0,
    10_000,
  );
  return { code, stdout, stderr, leftovers };
}

const oneLine = (signal: string) => `\nstroem-db: interrupted by ${signal}: stopping and cleaning up…\n`;
const initdbStarted = (tmp: string) =>
  readdirSync(tmp).some((e) => e.startsWith("stroem-pg-") && readdirSync(path.join(tmp, e)).includes("data"));

describe.skipIf(ownServerOnly)(
  "interrupting the demo on its embedded server (skipped when STROEM_TEST_DATABASE_URL is set: then no test starts a server)",
  () => {
    it("SIGINT during start-up (initdb): 130, one line, no initdb output, nothing left", async () => {
      const r = await interrupt({
        args: [],
        after: /Starting an embedded PostgreSQL/,
        ready: initdbStarted,
        signals: ["SIGINT"],
      });
      expect(r.code).toBe(130);
      expect(r.stderr).toBe(oneLine("SIGINT"));
      expect(r.leftovers).toEqual([]);
    });

    it("a double Ctrl-C during start-up still cleans up", async () => {
      const r = await interrupt({
        args: [],
        after: /Starting an embedded PostgreSQL/,
        ready: initdbStarted,
        signals: ["SIGINT", "SIGINT"],
      });
      expect(r.code).toBe(130);
      expect(r.stderr).toBe(oneLine("SIGINT"));
      expect(r.leftovers).toEqual([]);
    });

    it("SIGTERM during migration: 143, nothing left", async () => {
      const r = await interrupt({
        args: [],
        after: /Embedded PostgreSQL is up/,
        holdAt: "migrate",
        signals: ["SIGTERM"],
      });
      expect(r.code).toBe(143);
      expect(r.stderr).toBe(oneLine("SIGTERM"));
      expect(r.leftovers).toEqual([]);
    });

    it("SIGINT during job creation: 130, nothing left", async () => {
      const r = await interrupt({ args: ["--jobs", "3000"], after: /^Migrated:/m, signals: ["SIGINT"] });
      expect(r.code).toBe(130);
      expect(r.stdout).not.toMatch(/^Created/m);
      expect(r.leftovers).toEqual([]);
    });

    it("SIGTERM while the workers run: 143, nothing left", async () => {
      const r = await interrupt({
        args: ["--jobs", "400", "--workers", "4"],
        after: /^jobs +\d+\/400/m,
        signals: ["SIGTERM"],
      });
      expect(r.code).toBe(143);
      expect(r.stderr).toBe(oneLine("SIGTERM"));
      expect(r.stdout).not.toMatch(/^Checks:/m);
      expect(r.leftovers).toEqual([]);
    });

    it("SIGINT during the report: 130, nothing left", async () => {
      const r = await interrupt({
        args: ["--jobs", "3"],
        after: /^jobs +3\/3/m,
        holdAt: "report",
        signals: ["SIGINT"],
      });
      expect(r.code).toBe(130);
      expect(r.stdout).not.toMatch(/^Checks:/m);
      expect(r.leftovers).toEqual([]);
    });
  },
);

describe("interrupting the demo on --url drops its scratch database", () => {
  const exists = (name: string) =>
    withClient(adminUrl, (c) => c.query("select 1 from pg_database where datname = $1", [name])).then(
      (r) => r.rowCount === 1,
    );

  it.each([
    ["SIGTERM during job creation", { args: ["--jobs", "3000"], after: /^Migrated:/m, signals: ["SIGTERM"] }, 143],
    [
      "SIGINT during the report",
      { args: ["--jobs", "3"], after: /^jobs +3\/3/m, holdAt: "report", signals: ["SIGINT"] },
      130,
    ],
  ] as Array<[string, Case, number]>)("%s", async (_, c, expected) => {
    const r = await interrupt({ ...c, args: [...c.args, "--url", adminUrl] });
    expect(r.code).toBe(expected);
    const name = /Using database (stroem_demo_[0-9a-f]+)/.exec(r.stdout)?.[1];
    expect(name).toBeDefined();
    expect(await exists(name as string)).toBe(false);
  });
});
