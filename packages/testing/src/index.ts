export { countConnections, createDatabaseFromTemplate, dropDatabase, withClient } from "./admin.js";
export { isDockerReachable } from "./docker.js";
export { type EmbeddedOptions, type RunningServer, startEmbeddedPostgres } from "./embedded.js";
export {
  chooseServer,
  dockerEndpoints,
  FORCE_VARIABLE,
  type ServerChoice,
  type ServerKind,
  ServerSelectionError,
  URL_VARIABLES,
} from "./select.js";
export {
  DEFAULT_CONTAINER_IMAGE,
  IMAGE_VARIABLE,
  redactUrl,
  startTestServer,
  type TestServer,
  withDatabase,
} from "./server.js";
