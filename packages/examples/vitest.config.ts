import { defineConfig } from "vitest/config";

// The example starts (and stops) its own embedded server.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 180_000,
    hookTimeout: 180_000,
  },
});
