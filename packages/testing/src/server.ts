import { type RunningServer, startEmbeddedPostgres } from "@stroem/embedded-pg";
import { isDockerReachable } from "./docker.js";
import { chooseServer, type ServerChoice, type ServerKind } from "./select.js";

export const DEFAULT_CONTAINER_IMAGE = "postgres:17-alpine";
export const IMAGE_VARIABLE = "STROEM_TEST_PG_IMAGE";

export interface TestServer extends RunningServer {
  kind: ServerKind;
  reason: string;
}

/**
 * Chooses a server (see `chooseServer`) and starts it when it is ours to
 * start. For an existing server (`url`), `stop()` does nothing: the server is
 * not ours.
 */
export async function startTestServer(
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<TestServer> {
  const choice = await chooseServer(env, () => isDockerReachable(env));
  return { ...(await startChosen(choice, env)), kind: choice.kind, reason: choice.reason };
}

async function startChosen(
  choice: ServerChoice,
  env: Readonly<Record<string, string | undefined>>,
): Promise<RunningServer> {
  switch (choice.kind) {
    case "url":
      return { url: choice.url as string, stop: async () => {} };
    case "container": {
      // Loaded only here: testcontainers is heavy and most runs never need it.
      const { PostgreSqlContainer } = await import("@testcontainers/postgresql");
      const container = await new PostgreSqlContainer(env[IMAGE_VARIABLE] || DEFAULT_CONTAINER_IMAGE)
        .withCommand(["postgres", "-c", "max_connections=400", "-c", "fsync=off", "-c", "synchronous_commit=off"])
        .start();
      const url = new URL(container.getConnectionUri());
      url.pathname = "/postgres";
      let stopped = false;
      return {
        url: url.toString(),
        async stop() {
          if (stopped) return;
          stopped = true;
          await container.stop();
        },
      };
    }
    case "embedded":
      return startEmbeddedPostgres();
  }
}

/**
 * Where a server is, for logs: `host:port/database`, never the credentials.
 * (URL redaction lives in @stroem/repos, which this package must not import.)
 */
export function describeServer(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return "<unparseable url>";
  }
}
