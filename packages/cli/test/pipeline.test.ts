import { describe, expect, it } from "vitest";
import { PERSISTENT_SHARE, PIPELINE, stepOutcome } from "../src/demo/pipeline.js";

describe("the demo's pipeline", () => {
  it("gives unit-tests and deploy a retry policy, the other steps none", () => {
    const policies = Object.fromEntries(PIPELINE.map((s) => [s.stepName, [s.maxRetries ?? 0, s.retryBackoffSecs]]));
    expect(policies).toEqual({
      checkout: [0, undefined],
      lint: [0, undefined],
      "unit-tests": [2, 0],
      build: [0, undefined],
      package: [0, undefined],
      approve: [0, undefined],
      deploy: [2, 0],
      "smoke-test": [0, undefined],
      notify: [0, undefined],
    });
  });
});

describe("stepOutcome", () => {
  const attempts = (job: number, rate = 0.3) => [1, 2, 3].map((a) => stepOutcome(9, job, "deploy", rate, 40, a));

  it("is deterministic per attempt; the first attempt is the default", () => {
    for (let job = 0; job < 50; job++) {
      expect(attempts(job)).toEqual(attempts(job));
      expect(stepOutcome(9, job, "deploy", 0.3, 40)).toEqual(stepOutcome(9, job, "deploy", 0.3, 40, 1));
    }
  });

  it("keeps durations within 2..maxMs and never fails at rate 0, always at rate 1", () => {
    for (let job = 0; job < 50; job++) {
      for (const o of attempts(job, 0)) {
        expect(o.fail).toBe(false);
        expect(o.ms).toBeGreaterThanOrEqual(2);
        expect(o.ms).toBeLessThanOrEqual(40);
      }
      expect(attempts(job, 1).every((o) => o.fail)).toBe(true);
    }
  });

  it("has flaky failures that a retry can fix and persistent ones that run out", () => {
    const failedFirst = Array.from({ length: 400 }, (_, job) => attempts(job)).filter(([first]) => first?.fail);
    const recovered = failedFirst.filter(([, second, third]) => !second?.fail || !third?.fail).length;
    const exhausted = failedFirst.filter(([, second, third]) => second?.fail && third?.fail).length;
    expect(recovered).toBeGreaterThan(0);
    expect(exhausted).toBeGreaterThan(0);
    // Persistent failures alone make at least this share run out.
    expect(exhausted / failedFirst.length).toBeGreaterThanOrEqual(PERSISTENT_SHARE * 0.7);
  });
});
