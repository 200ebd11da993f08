export * from "./constants.js";
export {
  MIGRATION_LOCK_KEY,
  MIGRATIONS_FOLDER,
  MIGRATIONS_SCHEMA,
  MIGRATIONS_TABLE,
  type MigrationResult,
  runMigrations,
} from "./migrate.js";
export { SCHEMA_NAME, searchPathOption, withSearchPath } from "./search-path.js";
export * from "./tables.js";
export type { NewFlowStep, NewJobStep } from "./types.js";
