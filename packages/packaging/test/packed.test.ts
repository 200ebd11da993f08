import { execFile } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// The published packages as a user gets them: built, `pnpm pack`ed (which
// turns `workspace:` and `catalog:` into real ranges), installed together
// with npm into an empty project (third-party dependencies from the
// registry), then used there from plain Node and from TypeScript, and the
// installed `stroem-db` run. Not part of `pnpm test` (it needs the registry):
// `pnpm test:packaging`, its own leg in `.ci/run`.

const exec = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const FIXTURE = fileURLToPath(new URL("../fixture/", import.meta.url));
const EXAMPLE = fileURLToPath(new URL("../../examples/src/worker.ts", import.meta.url));
const PUBLISHED = ["schema", "orchestrator", "repos", "embedded-pg", "cli", "testing"];

// Time budgets for 2 busy cores. npm install takes about a minute with a
// cold cache (some 250 packages: testcontainers and vitest, the peer of
// @stroem/testing, are most of them); give it five.
const BUILD_MS = 180_000;
const PACK_MS = 60_000;
const NPM_INSTALL_MS = 300_000;
const SETUP_MS = BUILD_MS + PACK_MS + 30_000;
const SMOKE_MS = 180_000; // embedded server start (as root: a one-time copy of its binaries), migrate twice
const TSC_MS = 120_000;
const CLI_MS = 60_000;

interface Manifest {
  name: string;
  version?: string;
  private?: boolean;
  license?: string;
  description?: string;
  engines?: { node?: string };
  files?: string[];
  exports?: Record<string, unknown>;
  main?: string;
  types?: string;
  bin?: Record<string, string>;
  publishConfig?: { access?: string };
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

const RUNTIME_FIELDS = ["dependencies", "peerDependencies", "optionalDependencies"] as const;

const readJson = <T>(file: string): T => JSON.parse(readFileSync(file, "utf8")) as T;

/**
 * The environment for npm in the consumer project: without the `npm_*`
 * variables `pnpm run` sets for its script (this package's name, pnpm's user
 * agent), but with any `npm_config_*` the caller set (a registry mirror, a
 * cache), and no PATH entry inside this workspace, so `npx --no --
 * stroem-db` can only find the installed bin.
 */
function consumerEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    const npmConfig = /^npm_config_/i.test(key) && !/^npm_config_user_agent$/i.test(key);
    if (npmConfig || !/^npm_/i.test(key)) env[key] = value;
  }
  env.PATH = (process.env.PATH ?? "")
    .split(path.delimiter)
    .filter((dir) => !path.resolve(dir).startsWith(ROOT))
    .join(path.delimiter);
  env.npm_config_update_notifier = "false";
  env.npm_config_fund = "false";
  env.npm_config_audit = "false";
  return env;
}

let work = "";
let project = "";
const tarballs = new Map<string, string>(); // package name -> tarball path

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), "stroem-packed-"));
  const packs = path.join(work, "tarballs");
  project = path.join(work, "project");
  mkdirSync(packs);
  mkdirSync(project);
  await exec(
    "pnpm",
    [
      "exec",
      "turbo",
      "run",
      "build",
      "--filter=@stroem/cli...",
      "--filter=@stroem/testing...",
      "--output-logs=errors-only",
    ],
    { cwd: ROOT, timeout: BUILD_MS, env: { ...process.env, TURBO_TELEMETRY_DISABLED: "1" } },
  );
  await Promise.all(
    PUBLISHED.map((dir) =>
      exec("pnpm", ["pack", "--pack-destination", packs], { cwd: path.join(ROOT, "packages", dir), timeout: PACK_MS }),
    ),
  );
  for (const file of readdirSync(packs)) {
    const manifest = await packedManifest(path.join(packs, file));
    tarballs.set(manifest.name, path.join(packs, file));
  }
}, SETUP_MS);

// Removing the scratch project (an installed node_modules) can take more
// than vitest's default 10 s hook budget on a loaded machine.
afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
}, SETUP_MS);

async function packedManifest(tarball: string): Promise<Manifest> {
  const { stdout } = await exec("tar", ["-xzOf", tarball, "package/package.json"]);
  return JSON.parse(stdout) as Manifest;
}

async function packedFiles(tarball: string): Promise<string[]> {
  const { stdout } = await exec("tar", ["-tzf", tarball]);
  return stdout
    .split("\n")
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ""));
}

/** The file paths an `exports` map points at (its leaves, not its keys). */
function exportTargets(exports: unknown): string[] {
  if (typeof exports === "string") return [exports];
  if (exports && typeof exports === "object") return Object.values(exports).flatMap(exportTargets);
  return [];
}

describe("the workspace", () => {
  it("publishes exactly the runtime packages and testing; no published package depends on a private one", () => {
    const all = readdirSync(path.join(ROOT, "packages")).map((dir) =>
      readJson<Manifest>(path.join(ROOT, "packages", dir, "package.json")),
    );
    const published = all.filter((m) => !m.private).map((m) => m.name);
    expect(published.sort()).toEqual(PUBLISHED.map((d) => `@stroem/${d}`).sort());
    const privates = new Set(all.filter((m) => m.private).map((m) => m.name));
    for (const m of all.filter((m) => !m.private))
      for (const field of RUNTIME_FIELDS)
        for (const dep of Object.keys(m[field] ?? {}))
          expect(privates.has(dep), `${m.name} ${field} ${dep}`).toBe(false);
  });
});

describe("each tarball", () => {
  it("is packed for every published package", () => {
    expect([...tarballs.keys()].sort()).toEqual(PUBLISHED.map((d) => `@stroem/${d}`).sort());
  });

  it("has real ranges, a version, license, description, engines and public access", async () => {
    for (const [name, tarball] of tarballs) {
      const m = await packedManifest(tarball);
      expect(m.private, name).toBeUndefined();
      expect(m.version, name).toMatch(/^\d+\.\d+\.\d+/);
      expect(m.license, name).toBeTruthy();
      expect(m.description, name).toBeTruthy();
      expect(m.engines?.node, name).toBe(">=20.19");
      expect(m.publishConfig?.access, name).toBe("public");
      expect(JSON.stringify(m), name).not.toMatch(/workspace:|catalog:/);
      for (const field of RUNTIME_FIELDS)
        for (const [dep, range] of Object.entries(m[field] ?? {}))
          if (dep.startsWith("@stroem/")) {
            expect(tarballs.has(dep), `${name} ${field} ${dep} is published`).toBe(true);
            expect(range, `${name} ${field} ${dep}`).toBe(m.version);
          }
    }
  });

  it("holds only what runs: dist without source maps, the README, and schema's migrations and SQL source", async () => {
    for (const [name, tarball] of tarballs) {
      const files = await packedFiles(tarball);
      const unexpected = files.filter(
        (f) =>
          !/^dist\/.+\.(js|d\.ts)$/.test(f) &&
          f !== "package.json" &&
          f !== "README.md" &&
          !(
            name === "@stroem/schema" &&
            /^(drizzle\/(\d{4}_\w+\.sql|meta\/_journal\.json)|sql\/\d{2}_\w+\.sql)$/.test(f)
          ),
      );
      expect(unexpected, name).toEqual([]);
      const m = await packedManifest(tarball);
      // Every file an export, main, types or bin names is in the tarball.
      const targets = [
        ...exportTargets(m.exports),
        ...[m.main, m.types, ...Object.values(m.bin ?? {})].filter((t): t is string => !!t),
      ].map((t) => t.replace(/^\.\//, ""));
      for (const t of targets) expect(files, `${name}: ${t}`).toContain(t);
    }
    const schema = await packedFiles(tarballs.get("@stroem/schema")!);
    const journal = readJson<{ entries: { tag: string }[] }>(
      path.join(ROOT, "packages/schema/drizzle/meta/_journal.json"),
    );
    for (const { tag } of journal.entries) expect(schema).toContain(`drizzle/${tag}.sql`);
  });
});

// The install is a test of its own, first in its block (tests in a file run
// in order), so that a failed install counts as failed tests in CI's closing
// line rather than as skipped ones; the tests after it need it.
describe("installed with npm into an empty project", () => {
  let installed = false;
  const requireInstall = () => {
    if (!installed) throw new Error("the npm install of the tarballs failed (see that test)");
  };

  it(
    "installs every tarball together with npm",
    async () => {
      writeFileSync(
        path.join(project, "package.json"),
        `${JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module" }, null, 2)}\n`,
        { flag: "wx" },
      );
      await exec("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", ...tarballs.values()], {
        cwd: project,
        env: consumerEnv(),
        timeout: NPM_INSTALL_MS,
        maxBuffer: 16 * 1024 * 1024,
      });
      installed = true;
    },
    NPM_INSTALL_MS + 10_000,
  );

  it("takes every @stroem package from the tarballs, none from the registry", () => {
    requireInstall();
    const lock = readJson<{ packages: Record<string, { resolved?: string }> }>(path.join(project, "package-lock.json"));
    const stroem = Object.entries(lock.packages).filter(([key]) => key.includes("node_modules/@stroem/"));
    expect(stroem.map(([key]) => key).sort()).toEqual(PUBLISHED.map((d) => `node_modules/@stroem/${d}`).sort());
    for (const [key, entry] of stroem) expect(entry.resolved, key).toMatch(/^file:/);
  });

  it("resolves schema's MIGRATIONS_FOLDER inside the installed package", async () => {
    requireInstall();
    const { stdout } = await exec(
      "node",
      ["--input-type=module", "-e", 'console.log((await import("@stroem/schema")).MIGRATIONS_FOLDER)'],
      { cwd: project, env: consumerEnv() },
    );
    const folder = stdout.trim();
    expect(folder).toBe(path.join(project, "node_modules/@stroem/schema/drizzle"));
    expect(existsSync(path.join(folder, "meta/_journal.json"))).toBe(true);
  });

  it(
    "runs a worker's round trip on the embedded PostgreSQL, and `stroem-db migrate` on it",
    async () => {
      requireInstall();
      copyFileSync(path.join(FIXTURE, "smoke.mjs"), path.join(project, "smoke.mjs"));
      const { stdout } = await exec("node", ["smoke.mjs"], {
        cwd: project,
        env: consumerEnv(),
        timeout: SMOKE_MS,
        killSignal: "SIGTERM",
      });
      const tags = readJson<{ entries: { tag: string }[] }>(
        path.join(ROOT, "packages/schema/drizzle/meta/_journal.json"),
      ).entries.map((e) => e.tag);
      const result = JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}");
      expect(result.library).toEqual({
        applied: tags,
        reports: [
          { stepName: "build", promoted: ["deploy"], jobStatus: "running" },
          { stepName: "deploy", promoted: [], jobStatus: "completed" },
        ],
        jobStatus: "completed",
      });
      expect(result.cli.stdout).toBe(tags.map((t) => `applied ${t}\n`).join(""));
      expect(result.cli.recorded).toBe(tags.length);
    },
    SMOKE_MS + 10_000,
  );

  it(
    "prints the installed CLI's version with `npx stroem-db --version`",
    async () => {
      requireInstall();
      // --no: never fetch a package from the registry; `--`: without it,
      // after --no, npm takes --version as its own and prints npm's version.
      const { stdout } = await exec("npx", ["--no", "--", "stroem-db", "--version"], {
        cwd: project,
        env: consumerEnv(),
        timeout: CLI_MS,
      });
      const { version } = readJson<Manifest>(path.join(ROOT, "packages/cli/package.json"));
      expect(stdout.trim()).toBe(version);
      expect(existsSync(path.join(project, "node_modules/.bin/stroem-db"))).toBe(true);
    },
    CLI_MS + 10_000,
  );

  it(
    "type-checks a strict TypeScript consumer through the packages' exports",
    async () => {
      requireInstall();
      copyFileSync(path.join(FIXTURE, "consumer.ts"), path.join(project, "consumer.ts"));
      const tsc = path.join(path.dirname(createRequire(import.meta.url).resolve("typescript")), "../bin/tsc");
      const args = ["--strict", "--noEmit", "--module", "nodenext", "--moduleResolution", "nodenext"];
      const run = exec("node", [tsc, ...args, "--target", "es2022", "--skipLibCheck", "consumer.ts"], {
        cwd: project,
        env: consumerEnv(),
        timeout: TSC_MS,
      });
      await expect(run.catch((e: { stdout?: string }) => Promise.reject(new Error(e.stdout)))).resolves.toBeDefined();
    },
    TSC_MS + 10_000,
  );

  it(
    "compiles the README's worker (packages/examples) with the README's tsconfig and runs it to a completed job",
    async () => {
      requireInstall();
      // What the root README's "Using it from TypeScript" prescribes, as a file.
      writeFileSync(
        path.join(project, "tsconfig.json"),
        `${JSON.stringify(
          {
            compilerOptions: {
              target: "es2022",
              module: "nodenext",
              moduleResolution: "nodenext",
              strict: true,
              skipLibCheck: true,
              outDir: "dist",
            },
            include: ["worker.ts"],
          },
          null,
          2,
        )}\n`,
      );
      copyFileSync(EXAMPLE, path.join(project, "worker.ts"));
      const tsc = path.join(path.dirname(createRequire(import.meta.url).resolve("typescript")), "../bin/tsc");
      await exec("node", [tsc, "-p", "tsconfig.json"], { cwd: project, env: consumerEnv(), timeout: TSC_MS }).catch(
        (e: { stdout?: string }) => Promise.reject(new Error(e.stdout)),
      );
      const { stdout } = await exec("node", ["dist/worker.js"], {
        cwd: project,
        env: { ...consumerEnv(), DATABASE_URL: "" },
        timeout: SMOKE_MS,
        killSignal: "SIGTERM",
      });
      expect(stdout).toMatch(/\[worker\] test failed \(retry at /);
      expect(stdout).toMatch(/\[worker\] job [0-9a-f-]{36} completed\n$/);
    },
    TSC_MS + SMOKE_MS + 10_000,
  );
});
