/**
 * `@stroem/repos/internal`: the hand-written statements, for EXPLAIN tests
 * and benchmarks. Not a stable API: call the repos instead.
 */
export { REVOKE_REUSED_FAMILY, ROTATE_REFRESH_TOKEN, VERIFY_API_KEY } from "./sql/auth.js";
export { claim, claimStatement, directedClaimStatement } from "./sql/claim.js";
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
export { searchStatement } from "./sql/search.js";
export { statsStatement } from "./sql/stats.js";
export { runStatement, type Statement } from "./statement.js";
