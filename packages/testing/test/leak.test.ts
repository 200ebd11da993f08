import { fileURLToPath } from "node:url";
import { expect, inject, it } from "vitest";
import { startVitest } from "vitest/node";
// The built module: src/config.ts points at a global-setup.js that only dist/ has.
import { GLOBAL_SETUP } from "../dist/config.js";

it("a test file that leaks a pool fails, although its test passed", async () => {
  const { adminUrl } = inject("stroemPg");
  const saved = process.env.STROEM_TEST_DATABASE_URL;
  // The nested run uses this run's server instead of starting another.
  process.env.STROEM_TEST_DATABASE_URL = adminUrl;
  try {
    const vitest = await startVitest("test", [fileURLToPath(new URL("./fixtures/leaky.fixture.ts", import.meta.url))], {
      watch: false,
      config: false,
      include: ["**/*.fixture.ts"],
      globalSetup: [GLOBAL_SETUP],
      reporters: [{}],
    });
    const files = vitest.state.getFiles();
    await vitest.close();
    expect(files).toHaveLength(1);
    const file = files[0];
    expect(file?.tasks[0]?.result?.state).toBe("pass");
    expect(file?.result?.state).toBe("fail");
    expect(JSON.stringify(file?.result?.errors)).toContain("were not ended by the test");
  } finally {
    if (saved === undefined) delete process.env.STROEM_TEST_DATABASE_URL;
    else process.env.STROEM_TEST_DATABASE_URL = saved;
    process.exitCode = undefined; // the nested run's failure is this test's expectation, not ours
  }
});
