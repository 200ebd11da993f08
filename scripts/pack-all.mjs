// `pnpm pack:all [DIR]`: builds and packs every published package into DIR
// (default ./packs), as `pnpm publish` would publish them (`workspace:` and
// `catalog:` turned into real ranges), then prints the npm command that
// installs them into another project. The packages are not on the npm
// registry yet: this is how to use them outside this workspace.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const dest = path.resolve(process.argv[2] ?? path.join(root, "packs"));
const published = readdirSync(path.join(root, "packages")).filter((dir) => {
  const manifest = JSON.parse(readFileSync(path.join(root, "packages", dir, "package.json"), "utf8"));
  return !manifest.private;
});
mkdirSync(dest, { recursive: true });
execFileSync(
  "pnpm",
  ["exec", "turbo", "run", "build", ...published.map((d) => `--filter=./packages/${d}`), "--output-logs=errors-only"],
  { cwd: root, stdio: "inherit", env: { ...process.env, TURBO_TELEMETRY_DISABLED: "1" } },
);
for (const dir of published) {
  execFileSync("pnpm", ["pack", "--pack-destination", dest], {
    cwd: path.join(root, "packages", dir),
    stdio: "ignore",
  });
}
const made = readdirSync(dest).filter((f) => f.endsWith(".tgz") && f.startsWith("stroem-"));
console.log(`packed ${published.length} packages into ${dest}:`);
for (const f of made.sort()) console.log(`  ${f}`);
console.log(`\nIn your project:\n  npm install ${made.map((f) => path.join(dest, f)).join(" ")}`);
