import { defineConfig } from "vitest/config";

// No @stroem/testing global setup: the quick bench starts (or is given) its own server.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 150_000,
    hookTimeout: 60_000,
  },
});
