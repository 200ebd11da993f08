export { countConnections, createDatabaseFromTemplate, dropDatabase, withClient, withDatabase } from "./admin.js";
export { type EmbeddedOptions, type RunningServer, startEmbeddedPostgres } from "./embedded.js";
export { EmbeddedPostgresError } from "./errors.js";
export { CACHE_VARIABLE, DEFAULT_CACHE_DIR, SERVER_USER } from "./install.js";
