import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { JobRepo, JobStepRepo, WorkerRepo } from "@stroem/repos";
import { useTestDb } from "@stroem/testing/fixture";
import { describe, expect, it } from "vitest";

const BIN = fileURLToPath(new URL("../dist/bin.js", import.meta.url));
const t = useTestDb();

/** Waits (with a deadline) until `read()` matches `pattern`. */
async function until(read: () => string, pattern: RegExp, ms = 60_000): Promise<void> {
  for (const deadline = Date.now() + ms; !pattern.test(read()); ) {
    if (Date.now() > deadline) throw new Error(`no ${pattern} in time; output so far:\n${read()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("stroem-db maintain", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`rescues a dead worker's step, prints a line for it, and stops cleanly on ${signal}`, async () => {
      await t.db.$client.query("delete from job");
      const jobId = await JobRepo.createWithSteps(t.db, { taskName: "m", sourceType: "api" }, [
        { stepName: "a", actionName: "x", actionType: "shell" },
      ]);
      const w = randomUUID();
      await WorkerRepo.register(t.db, { workerId: w, name: "dead", capabilities: ["shell"] });
      await JobStepRepo.claimReadyStep(t.db, ["shell"], w);
      await t.db.$client.query("update worker set last_heartbeat = now() - interval '1 hour' where worker_id = $1", [
        w,
      ]);

      const args = ["maintain", "--url", t.url, "--stale-after", "10", "--rescue-every", "0.05"];
      const child: ChildProcess = spawn(process.execPath, [BIN, ...args, ...(t.pooler ? ["--pooler"] : [])], {
        env: { ...process.env, DATABASE_URL: undefined },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout?.on("data", (c: Buffer) => {
        stdout += c.toString();
      });
      child.stderr?.on("data", (c: Buffer) => {
        stderr += c.toString();
      });
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      try {
        await until(() => stdout, /rescue: requeued 1, failed 0, cancelled 0/);
        // Nothing else to do: no more lines for the rescue (it ran again, changing nothing).
        child.kill(signal);
        expect(await exited).toBe(0);
      } finally {
        if (child.exitCode === null) child.kill("SIGKILL");
      }
      expect(stdout.match(/rescue:/g)).toHaveLength(1);
      // The line names what it moved: a line per step under it.
      expect(stdout).toMatch(
        new RegExp(
          `rescue: requeued 1, failed 0, cancelled 0 \\(\\d+ ms\\)\n {2}requeued job ${jobId} step a \\(attempt 1, worker ${w}\\)\n`,
        ),
      );
      expect(stdout).toMatch(/^maintaining postgres/m);
      expect(stdout).toMatch(/^stopped$/m);
      expect(stderr).not.toMatch(/failed/);
      expect((await JobStepRepo.getStepsForJob(t.db, jobId))[0]).toMatchObject({ status: "ready", rescues: 1 });
    });
  }

  it("refuses bad flags", async () => {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, "maintain", "--url", t.url, "--rescue-every", "-1"], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr?.on("data", (c: Buffer) => {
        stderr += c.toString();
      });
      child.once("exit", (code) => resolve({ code, stderr }));
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--rescue-every/);
  });
});
