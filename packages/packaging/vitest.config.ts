import { defineConfig } from "vitest/config";

// No database fixture: the test starts its own embedded PostgreSQL from the
// installed tarballs. Time budgets are set per hook and test in the test file.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
  },
});
