import { describe, expect, it } from "vitest";
import { main } from "../src/worker.js";

describe("the README's worker", () => {
  it("runs its pipeline to a completed job on an embedded PostgreSQL, retrying the flaky step", async () => {
    const lines: string[] = [];
    const log = console.log;
    console.log = (...args: unknown[]) => {
      lines.push(args.map(String).join(" "));
    };
    try {
      expect(await main(undefined)).toBe("completed");
    } finally {
      console.log = log;
    }
    expect(lines.some((l) => /test failed \(retry at /.test(l))).toBe(true);
    expect(lines.some((l) => /deploy completed; promoted \[\]; job completed/.test(l))).toBe(true);
  });
});
