import { defineConfig } from "vitest/config";

// Pure logic: no database, so no global setup.
export default defineConfig({ test: { include: ["test/**/*.test.ts"] } });
