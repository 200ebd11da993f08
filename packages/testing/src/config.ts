import { fileURLToPath } from "node:url";
import { defineConfig, mergeConfig, type ViteUserConfig } from "vitest/config";

/** Absolute path of the global setup module, for vitest's `globalSetup`. */
export const GLOBAL_SETUP = fileURLToPath(new URL("./global-setup.js", import.meta.url));

/**
 * The vitest config every package with database tests uses: one server and
 * one migrated template per run, generous timeouts for a shared 2-core machine.
 */
export function stroemTestConfig(overrides: ViteUserConfig = {}): ViteUserConfig {
  return mergeConfig(
    defineConfig({
      test: {
        globalSetup: [GLOBAL_SETUP],
        include: ["test/**/*.test.ts"],
        testTimeout: 60_000,
        hookTimeout: 120_000,
        teardownTimeout: 60_000,
      },
    }),
    overrides,
  );
}
