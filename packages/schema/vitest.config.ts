import { defineConfig } from "vitest/config";

// Pure tests only: this package's database tests live in @stroem/testing,
// which depends on this package (the reverse dependency would be a cycle).
export default defineConfig({ test: { include: ["test/**/*.test.ts"] } });
