import { PassThrough } from "node:stream";
import { describe, expect, inject, it } from "vitest";
import { CANCEL_REASON, PIPELINE, runDemo, stepOutcome } from "../src/demo/index.js";

const { adminUrl } = inject("stroemPg");

describe("the demo's cancelled job", () => {
  it("a running step of it is stopped by its worker, told by the heartbeat", { timeout: 120_000 }, async () => {
    // Seed 4 makes job #0's checkout run 3.8 s: several heartbeats (every 500 ms) come while it runs.
    const seed = 4;
    expect(stepOutcome(seed, 0, "checkout", 0.05, 4000).ms).toBeGreaterThan(3000);
    const out = new PassThrough();
    let text = "";
    out.on("data", (chunk) => {
      text += String(chunk);
    });
    const report = await runDemo({ jobs: 1, workers: 1, failRate: 0.05, seed, url: adminUrl, out, maxStepMs: 4000 });
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.jobs).toMatchObject({ completed: 0, failed: 0, cancelled: 1 });
    expect(report.cancelled).toMatchObject({
      index: 0,
      reason: CANCEL_REASON,
      steps: Object.fromEntries(PIPELINE.map((s) => [s.stepName, "cancelled"])),
    });
    expect(text).toContain("8 steps cancelled at once; 1 running asked to stop: checkout stopped by its worker");
    expect(text).toMatch(/✔ each executed step was recorded exactly once \(1 executions, 1 recorded, per attempt\)/);
  });
});
