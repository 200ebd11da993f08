/**
 * Typed errors of the repos boundary. Driver and Drizzle errors never leave
 * this package untranslated (`translate-error.ts` turns them into these):
 * callers match on these classes (or on `code`), and the driver's error
 * stays available as `cause`.
 */

/** Postgres SQLSTATE codes this package reacts to. */
export const PG = {
  UNIQUE_VIOLATION: "23505",
  FOREIGN_KEY_VIOLATION: "23503",
  CHECK_VIOLATION: "23514",
  /** Raised by the append-only trigger on `audit_event` (with constraint `audit_event_append_only`). */
  RESTRICT_VIOLATION: "23001",
  QUERY_CANCELED: "57014",
  ADMIN_SHUTDOWN: "57P01",
  CANNOT_CONNECT_NOW: "57P03",
  /** Never raised by this package's statements (job row before steps, everywhere); tests assert it. */
  DEADLOCK_DETECTED: "40P01",
} as const;

export class StroemDbError extends Error {
  override name = "StroemDbError";
  /**
   * The name of the prepared statement that failed (`stroem_finish_step`,
   * …), when the error came from one: what to log. Neither the message nor
   * `cause` carries a statement's SQL text or its values.
   */
  statement?: string;
}

/** Input rejected before anything was written. */
export class InvalidInputError extends StroemDbError {
  override name = "InvalidInputError";
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/** A `search` cursor that is not one `search` returned (garbled, truncated, or from something else). */
export class InvalidCursorError extends InvalidInputError {
  override name = "InvalidCursorError";
  constructor(message: string) {
    super("cursor", message);
  }
}

/** A time range or bucket a read refuses: `from` not before `to`, too long a range, too many buckets. */
export class InvalidRangeError extends InvalidInputError {
  override name = "InvalidRangeError";
}

export class NotFoundError extends StroemDbError {
  override name = "NotFoundError";
}

export class JobNotFoundError extends NotFoundError {
  override name = "JobNotFoundError";
  constructor(
    readonly jobId: string,
    options?: ErrorOptions,
  ) {
    super(`job ${jobId} not found`, options);
  }
}

export class StepNotFoundError extends NotFoundError {
  override name = "StepNotFoundError";
  constructor(
    readonly jobId: string,
    readonly stepName: string,
  ) {
    super(`step "${stepName}" of job ${jobId} not found`);
  }
}

export class WorkerNotFoundError extends NotFoundError {
  override name = "WorkerNotFoundError";
  constructor(
    readonly workerId: string,
    options?: ErrorOptions,
  ) {
    super(`worker ${workerId} not found (register it first)`, options);
  }
}

/** A status change the state machine forbids (e.g. anything out of a terminal status). */
export class InvalidTransitionError extends StroemDbError {
  override name = "InvalidTransitionError";
  constructor(
    readonly entity: "job" | "step",
    readonly jobId: string,
    readonly stepName: string | undefined,
    readonly currentStatus: string,
    readonly requestedStatus: string,
  ) {
    super(
      `${entity === "job" ? `job ${jobId}` : `step "${stepName}" of job ${jobId}`} cannot go from ${currentStatus} to ${requestedStatus}`,
    );
  }
}

/**
 * A job that cannot be made from another as asked (`JobRepo.restart`,
 * `retry`); nothing was written. `reason`: `not_failed` (only a failed job
 * is retried; `currentStatus` says what it is), `already_retried` (a job is
 * retried once: `retryJobId` is the retry), `upstream_not_completed` (a
 * restart's upstream steps must have completed in the source job: `steps`
 * are those that did not).
 */
export class LineageError extends StroemDbError {
  override name = "LineageError";
  constructor(
    readonly reason: "not_failed" | "already_retried" | "upstream_not_completed",
    readonly jobId: string,
    readonly details: { currentStatus?: string; retryJobId?: string; stepName?: string; steps?: string[] },
  ) {
    super(
      reason === "not_failed"
        ? `job ${jobId} is ${details.currentStatus}: only a failed job is retried`
        : reason === "already_retried"
          ? `job ${jobId} was retried already, by job ${details.retryJobId}`
          : `job ${jobId} cannot restart from step "${details.stepName}": upstream steps did not complete (${(details.steps ?? []).join(", ")})`,
    );
  }
}

/** A report on a step by a worker that no longer holds it (see `StepGuard`). */
export class StepOwnershipError extends StroemDbError {
  override name = "StepOwnershipError";
  constructor(
    readonly jobId: string,
    readonly stepName: string,
    readonly expected: { workerId?: string; attempt?: number },
    readonly actual: { workerId: string | null; attempt: number },
    /** The step's status now (a stale report meets it in any status: rescued, retried, claimed again, finished). */
    readonly currentStatus?: string,
  ) {
    super(
      `step "${stepName}" of job ${jobId} is ${currentStatus ? `${currentStatus}, ` : ""}${
        actual.workerId ? `held by worker ${actual.workerId}` : "held by no worker"
      } in attempt ${actual.attempt}, not by ${expected.workerId ?? "any worker"} in attempt ${
        expected.attempt ?? "any"
      }: the report is not from the step's current claim`,
    );
  }
}

/** A step name used twice within one job. */
export class DuplicateStepError extends StroemDbError {
  override name = "DuplicateStepError";
  constructor(
    readonly jobId: string | undefined,
    readonly stepName: string | undefined,
    options?: ErrorOptions,
  ) {
    super(
      stepName !== undefined
        ? `step "${stepName}" already exists in job ${jobId}`
        : "a step name is used twice in one job",
      options,
    );
  }
}

/** A constraint the database enforced. `constraint` names it; `code` is the SQLSTATE. */
export class ConstraintViolationError extends StroemDbError {
  override name = "ConstraintViolationError";
  constructor(
    message: string,
    readonly code: string,
    readonly constraint: string | undefined,
    options?: ErrorOptions & { detail?: string },
  ) {
    super(message, options);
    this.detail = options?.detail;
  }
  /** Postgres' DETAIL line, e.g. `Key (job_id, step_name)=(…, build) already exists.` */
  readonly detail: string | undefined;
}
export class CheckViolationError extends ConstraintViolationError {
  override name = "CheckViolationError";
}
export class UniqueViolationError extends ConstraintViolationError {
  override name = "UniqueViolationError";
}
export class ForeignKeyViolationError extends ConstraintViolationError {
  override name = "ForeignKeyViolationError";
}

/**
 * The database refused to change or remove audit events: `audit_event` is
 * append-only (a trigger); only the retention purge (`purgeFinished`) deletes
 * old ones. `operation` is what was refused (`UPDATE`, `DELETE`, `TRUNCATE`).
 */
export class AuditLogAppendOnlyError extends StroemDbError {
  override name = "AuditLogAppendOnlyError";
  constructor(
    readonly operation: string,
    options?: ErrorOptions,
  ) {
    super(
      `the audit log is append-only: ${operation} of audit_event refused (only the retention purge deletes)`,
      options,
    );
  }
}

/** The server could not be reached, refused us, or went away. */
export class ConnectionError extends StroemDbError {
  override name = "ConnectionError";
  constructor(
    message: string,
    readonly host: string | undefined,
    readonly port: number | undefined,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Any other database error; `code` is the SQLSTATE when Postgres sent one. */
export class DatabaseError extends StroemDbError {
  override name = "DatabaseError";
  constructor(
    message: string,
    readonly code: string | undefined,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** No user with this id. */
export class UserNotFoundError extends NotFoundError {
  override name = "UserNotFoundError";
  constructor(
    readonly userId: string,
    options?: ErrorOptions,
  ) {
    super(`user ${userId} not found`, options);
  }
}

/** Another user already has this email (emails are unique case-insensitively). */
export class DuplicateEmailError extends StroemDbError {
  override name = "DuplicateEmailError";
  constructor(
    readonly email: string,
    options?: ErrorOptions,
  ) {
    super(
      `a user with email ${JSON.stringify(email)} already exists (emails are compared case-insensitively)`,
      options,
    );
  }
}

/**
 * An external identity link that would break "one user per external
 * identity, one identity per provider and user": the identity belongs to
 * another user, or the user is linked to another identity at this provider.
 */
export class IdentityLinkConflictError extends StroemDbError {
  override name = "IdentityLinkConflictError";
  constructor(
    readonly userId: string,
    readonly providerId: string,
    readonly reason: "identity-linked-to-another-user" | "user-linked-to-another-identity",
  ) {
    super(
      reason === "identity-linked-to-another-user"
        ? `this ${providerId} identity is already linked to another user`
        : `user ${userId} is already linked to another ${providerId} identity (unlink it first)`,
    );
  }
}

/** No API key with this id (its `keyHash`) belongs to the user. */
export class ApiKeyNotFoundError extends NotFoundError {
  override name = "ApiKeyNotFoundError";
  constructor(
    readonly userId: string,
    readonly keyHash: string,
  ) {
    super(`API key ${keyHash.slice(0, 12)}… of user ${userId} not found`);
  }
}
