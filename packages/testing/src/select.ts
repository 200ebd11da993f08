/**
 * Which PostgreSQL server the tests (and the demo) use. Pure: it reads the
 * environment it is given and a Docker probe, so its unit test covers every
 * branch without a server.
 */
export type ServerKind = "url" | "container" | "embedded";

export interface ServerChoice {
  kind: ServerKind;
  /** Set when kind is "url": the existing server to use. */
  url?: string;
  /** One line for the log: what was chosen and why. */
  reason: string;
}

export class ServerSelectionError extends Error {
  override name = "ServerSelectionError";
}

export const FORCE_VARIABLE = "STROEM_TEST_PG";
export const URL_VARIABLES = ["STROEM_TEST_DATABASE_URL", "DATABASE_URL"] as const;

/**
 * Order: `STROEM_TEST_PG` forces a kind; else `STROEM_TEST_DATABASE_URL` (or
 * `DATABASE_URL`) names an existing server; else a container when a Docker
 * engine answers; else an embedded PostgreSQL.
 */
export async function chooseServer(
  env: Readonly<Record<string, string | undefined>>,
  dockerReachable: () => Promise<boolean>,
): Promise<ServerChoice> {
  const urlVar = URL_VARIABLES.find((name) => env[name]?.trim());
  const url = urlVar ? env[urlVar]?.trim() : undefined;
  const forced = env[FORCE_VARIABLE]?.trim().toLowerCase();

  if (forced) {
    switch (forced) {
      case "url":
        if (!url) {
          throw new ServerSelectionError(
            `${FORCE_VARIABLE}=url needs ${URL_VARIABLES.join(" or ")} to name the server`,
          );
        }
        return { kind: "url", url, reason: `forced by ${FORCE_VARIABLE}=url (${urlVar})` };
      case "container":
        return { kind: "container", reason: `forced by ${FORCE_VARIABLE}=container` };
      case "embedded":
        return { kind: "embedded", reason: `forced by ${FORCE_VARIABLE}=embedded` };
      default:
        throw new ServerSelectionError(
          `${FORCE_VARIABLE} must be one of url, container, embedded (got "${env[FORCE_VARIABLE]}")`,
        );
    }
  }
  if (url) return { kind: "url", url, reason: `${urlVar} is set` };
  if (await dockerReachable()) return { kind: "container", reason: "a Docker engine is reachable" };
  return { kind: "embedded", reason: "no database URL set and no Docker engine reachable" };
}

/**
 * Where the Docker engine would listen, from `DOCKER_HOST` or the usual
 * socket paths. Returned as connect options for `node:http`.
 */
export function dockerEndpoints(
  env: Readonly<Record<string, string | undefined>>,
  home: string | undefined,
): Array<{ socketPath: string } | { host: string; port: number }> {
  const dockerHost = env.DOCKER_HOST?.trim();
  if (dockerHost) {
    if (dockerHost.startsWith("unix://")) return [{ socketPath: dockerHost.slice("unix://".length) }];
    if (dockerHost.startsWith("tcp://")) {
      const u = new URL(dockerHost.replace(/^tcp:/, "http:"));
      return [{ host: u.hostname, port: Number(u.port || 2375) }];
    }
    return [];
  }
  const paths = ["/var/run/docker.sock"];
  if (home) paths.push(`${home}/.docker/run/docker.sock`, `${home}/.docker/desktop/docker.sock`);
  if (env.XDG_RUNTIME_DIR) paths.push(`${env.XDG_RUNTIME_DIR}/docker.sock`);
  return paths.map((socketPath) => ({ socketPath }));
}
