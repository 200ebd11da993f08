import { describe, expect, it } from "vitest";
import { poolerUrlFrom } from "../src/pooler.js";
import { chooseServer, dockerEndpoints, ServerSelectionError } from "../src/select.js";

const yes = async () => true;
const no = async () => false;
const never = async (): Promise<boolean> => {
  throw new Error("the Docker probe must not run here");
};

describe("chooseServer", () => {
  it("uses STROEM_TEST_DATABASE_URL first, then DATABASE_URL, without probing Docker", async () => {
    expect(
      await chooseServer({ STROEM_TEST_DATABASE_URL: "postgres://a/x", DATABASE_URL: "postgres://b/y" }, never),
    ).toEqual({
      kind: "url",
      url: "postgres://a/x",
      reason: "STROEM_TEST_DATABASE_URL is set",
    });
    expect((await chooseServer({ DATABASE_URL: "postgres://b/y" }, never)).url).toBe("postgres://b/y");
  });

  it("ignores blank URL variables", async () => {
    expect((await chooseServer({ STROEM_TEST_DATABASE_URL: "  " }, no)).kind).toBe("embedded");
  });

  it("prefers a reachable Docker engine over the embedded server", async () => {
    expect((await chooseServer({}, yes)).kind).toBe("container");
    expect((await chooseServer({}, no)).kind).toBe("embedded");
  });

  it("STROEM_TEST_PG forces a kind, whatever else is set", async () => {
    expect((await chooseServer({ STROEM_TEST_PG: "embedded", DATABASE_URL: "postgres://b/y" }, never)).kind).toBe(
      "embedded",
    );
    expect((await chooseServer({ STROEM_TEST_PG: "container" }, never)).kind).toBe("container");
    expect((await chooseServer({ STROEM_TEST_PG: "URL", DATABASE_URL: "postgres://b/y" }, never)).url).toBe(
      "postgres://b/y",
    );
  });

  it("rejects a forced url without a URL, and unknown kinds", async () => {
    await expect(chooseServer({ STROEM_TEST_PG: "url" }, never)).rejects.toThrow(ServerSelectionError);
    await expect(chooseServer({ STROEM_TEST_PG: "docker" }, never)).rejects.toThrow(
      /must be one of url, container, embedded/,
    );
  });
});

describe("dockerEndpoints", () => {
  it("reads DOCKER_HOST for unix and tcp, else the usual sockets", () => {
    expect(dockerEndpoints({ DOCKER_HOST: "unix:///run/d.sock" }, "/h")).toEqual([{ socketPath: "/run/d.sock" }]);
    expect(dockerEndpoints({ DOCKER_HOST: "tcp://10.0.0.5:2376" }, "/h")).toEqual([{ host: "10.0.0.5", port: 2376 }]);
    expect(dockerEndpoints({ DOCKER_HOST: "ssh://x" }, "/h")).toEqual([]);
    expect(dockerEndpoints({}, "/h")).toEqual([
      { socketPath: "/var/run/docker.sock" },
      { socketPath: "/h/.docker/run/docker.sock" },
      { socketPath: "/h/.docker/desktop/docker.sock" },
    ]);
  });
});

describe("poolerUrlFrom", () => {
  it("is undefined without STROEM_TEST_POOLER_URL, the URL with it in front of a server given by URL", () => {
    expect(poolerUrlFrom({}, "embedded")).toBeUndefined();
    expect(poolerUrlFrom({ STROEM_TEST_POOLER_URL: " " }, "url")).toBeUndefined();
    expect(poolerUrlFrom({ STROEM_TEST_POOLER_URL: "postgres://u@h:6432/postgres" }, "url")).toBe(
      "postgres://u@h:6432/postgres",
    );
  });

  it("refuses a pooler in front of a server the fixtures start, and what is not a postgres URL", () => {
    expect(() => poolerUrlFrom({ STROEM_TEST_POOLER_URL: "postgres://h:6432/x" }, "embedded")).toThrow(
      /needs STROEM_TEST_DATABASE_URL/,
    );
    expect(() => poolerUrlFrom({ STROEM_TEST_POOLER_URL: "h:6432" }, "url")).toThrow(ServerSelectionError);
    expect(() => poolerUrlFrom({ STROEM_TEST_POOLER_URL: "not a url" }, "url")).toThrow(/not a URL/);
  });
});
