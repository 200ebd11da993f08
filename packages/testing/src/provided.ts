/** What the global setup hands to test files through vitest's `provide`/`inject`. */
export interface ProvidedPg {
  /** URL of the server's `postgres` database, for CREATE/DROP DATABASE. */
  adminUrl: string;
  /** The migrated database each test file's database is copied from. */
  template: string;
  /** Which kind of server: url, container or embedded. */
  kind: string;
  /**
   * Base URL of a transaction pooler in front of the server
   * (`STROEM_TEST_POOLER_URL`), through which test files reach their databases.
   */
  poolerUrl?: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    stroemPg: ProvidedPg;
  }
}
