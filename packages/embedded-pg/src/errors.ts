/**
 * The embedded server could not start, with a one-line message that says
 * what stands in the way and how to fix it. The underlying error, if any,
 * is its `cause`.
 */
export class EmbeddedPostgresError extends Error {
  override name = "EmbeddedPostgresError";
}
