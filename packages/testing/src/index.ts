export { isDockerReachable } from "./docker.js";
export { countPoolerClients, POOLER_VARIABLE, poolerUrlFrom } from "./pooler.js";
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
  describeServer,
  IMAGE_VARIABLE,
  startTestServer,
  type TestServer,
} from "./server.js";
