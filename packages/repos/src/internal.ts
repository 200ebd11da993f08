/**
 * `@stroem/repos/internal`: the hand-written statements, for EXPLAIN tests
 * and benchmarks. Not a stable API: call the repos instead.
 */
export { claimStatement, directedClaimStatement } from "./sql/claim.js";
export { createJobsStatement } from "./sql/create.js";
export {
  advanceManyStatement,
  advanceStatement,
  finishStepStatement,
  notifyReadyStatement,
  recountStatement,
  reportManyStatement,
} from "./sql/report.js";
export { rescueStatement } from "./sql/rescue.js";
