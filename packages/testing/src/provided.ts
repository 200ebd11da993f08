/** What the global setup hands to test files through vitest's `provide`/`inject`. */
export interface ProvidedPg {
  /** URL of the server's `postgres` database, for CREATE/DROP DATABASE. */
  adminUrl: string;
  /** The migrated database each test file's database is copied from. */
  template: string;
  /** Which kind of server: url, container or embedded. */
  kind: string;
  /** The schema the tables are in when not `public` (STROEM_TEST_SCHEMA). */
  schema?: string;
  /**
   * Base URL of a transaction pooler in front of the server
   * (`STROEM_TEST_POOLER_URL`), through which test files reach their databases.
   */
  poolerUrl?: string;
}

/**
 * Names a Postgres schema (say `stroem`) to run the tests with the tables in
 * it instead of `public`: the template gets the schema, and every test
 * connection's URL sets it as the search path. Not with a pooler.
 */
export const SCHEMA_VARIABLE = "STROEM_TEST_SCHEMA";

declare module "vitest" {
  export interface ProvidedContext {
    stroemPg: ProvidedPg;
  }
}
