import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decideRetry,
  MAX_RETRIES,
  MAX_RETRY_DELAY_SECS,
  RETRY_STRATEGIES,
  type RetryPolicy,
  retryDelaySecs,
} from "../src/index.js";

const policyArb = fc.record({
  maxRetries: fc.integer({ min: 0, max: MAX_RETRIES }),
  retryBackoffSecs: fc.integer({ min: 0, max: MAX_RETRY_DELAY_SECS }),
  retryStrategy: fc.constantFrom(...RETRY_STRATEGIES),
  retryJitter: fc.double({ min: 0, max: 1, noNaN: true }),
}) satisfies fc.Arbitrary<RetryPolicy>;
const attemptArb = fc.integer({ min: 1, max: 2000 });
const uArb = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

describe("retryDelaySecs", () => {
  it("examples: fixed, exponential, the cap, jitter", () => {
    const p = { maxRetries: 5, retryBackoffSecs: 10, retryStrategy: "exponential", retryJitter: 0 } as const;
    expect([1, 2, 3, 4].map((n) => retryDelaySecs(p, n, 0.5))).toEqual([10, 20, 40, 80]);
    expect([1, 2, 3].map((n) => retryDelaySecs({ ...p, retryStrategy: "fixed" }, n, 0.5))).toEqual([10, 10, 10]);
    expect(retryDelaySecs(p, 30, 0)).toBe(MAX_RETRY_DELAY_SECS);
    expect(retryDelaySecs({ ...p, retryJitter: 0.5 }, 1, 0.5)).toBe(7.5);
  });

  it("exponential never decreases with the attempt (for a given u)", () => {
    fc.assert(
      fc.property(policyArb, attemptArb, uArb, (policy, n, u) => {
        const p = { ...policy, retryStrategy: "exponential" as const };
        expect(retryDelaySecs(p, n + 1, u)).toBeGreaterThanOrEqual(retryDelaySecs(p, n, u));
      }),
    );
  });

  it("is bounded by the cap, and the jitter keeps it within [d * (1 - jitter), d]", () => {
    fc.assert(
      fc.property(policyArb, attemptArb, uArb, (policy, n, u) => {
        const d = retryDelaySecs(policy, n, u);
        const unjittered = retryDelaySecs({ ...policy, retryJitter: 0 }, n, u);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(MAX_RETRY_DELAY_SECS);
        expect(unjittered).toBeLessThanOrEqual(MAX_RETRY_DELAY_SECS);
        expect(d).toBeLessThanOrEqual(unjittered);
        expect(d).toBeGreaterThanOrEqual(unjittered * (1 - policy.retryJitter) - 1e-9);
        if (policy.retryStrategy === "fixed")
          expect(unjittered).toBe(Math.min(policy.retryBackoffSecs, MAX_RETRY_DELAY_SECS));
      }),
    );
  });
});

describe("decideRetry", () => {
  it("retries attempts 1..maxRetries, then the failure is final", () => {
    fc.assert(
      fc.property(policyArb, attemptArb, uArb, (policy, n, u) => {
        const d = decideRetry(policy, n, u);
        expect(d.retry).toBe(n <= policy.maxRetries);
        if (d.retry) expect(d.delaySecs).toBe(retryDelaySecs(policy, n, u));
      }),
    );
  });
});
