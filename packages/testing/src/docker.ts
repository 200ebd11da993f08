import { existsSync } from "node:fs";
import http from "node:http";
import { homedir } from "node:os";
import { dockerEndpoints } from "./select.js";

/** True when a Docker engine answers `GET /_ping` within `timeoutMs` on any known endpoint. */
export async function isDockerReachable(
  env: Readonly<Record<string, string | undefined>> = process.env,
  timeoutMs = 1000,
): Promise<boolean> {
  for (const endpoint of dockerEndpoints(env, homedir())) {
    if ("socketPath" in endpoint && !existsSync(endpoint.socketPath)) continue;
    if (await ping(endpoint, timeoutMs)) return true;
  }
  return false;
}

function ping(endpoint: { socketPath: string } | { host: string; port: number }, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ ...endpoint, path: "/_ping", timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
  });
}
