import { defineConfig } from "vitest/config";

// No shared server: each test starts (and stops) the servers it needs.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
