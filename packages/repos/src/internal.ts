/**
 * `@stroem/repos/internal`: the hand-written statements, for EXPLAIN tests
 * and benchmarks. Not a stable API: call the repos instead.
 *
 * One convention for the statements of `src/sql/`:
 * - `UPPER_CASE`: a prepared `Statement` (fixed text, `sql.placeholder`
 *   values), run with `runStatement`;
 * - `preparedXxx(…)`: picks the prepared statement for a call whose text
 *   depends on its shape (one capability or several, the batch size) and
 *   returns it with its values;
 * - `xxxStatement(…)`: a Drizzle `sql` with its values bound, for statements
 *   built per call (search filters, purge batches) and for EXPLAIN in tests.
 */
export { REVOKE_REUSED_FAMILY, ROTATE_REFRESH_TOKEN, VERIFY_API_KEY } from "./sql/auth.js";
export {
  claimStatement,
  directedClaimStatement,
  preparedClaim,
  // The name the bench used before the convention below; same function.
  preparedClaim as claim,
  preparedReportAndClaim,
} from "./sql/claim.js";
export { CREATE_JOBS } from "./sql/create.js";
export { allowAuditPurgeStatement, purgeAuditStatement, purgeJobsStatement } from "./sql/purge.js";
export {
  ADVANCE,
  advanceManyStatement,
  FINISH_STEP,
  notifyReadyStatement,
  REPORT_MANY,
  recountStatement,
  SKIP_STEP,
} from "./sql/report.js";
export { rescueStatement, sweepTimeoutsStatement } from "./sql/rescue.js";
export { searchStatement, searchWalkStatement } from "./sql/search.js";
export { statsStatement } from "./sql/stats.js";
export { runStatement, type Statement } from "./statement.js";
