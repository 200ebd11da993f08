import { sql } from "drizzle-orm";
import { statement } from "../statement.js";

/**
 * The hand-written statements of `ApiKeyRepo` and `RefreshTokenRepo`: those
 * run on every authenticated request (verify) or whose guard is the point
 * (rotate). Every secret arrives as its SHA-256 hex, never as itself.
 */

/**
 * A live key (known, not revoked, not expired) with its owner, and
 * `last_used_at` recorded at most once a minute: the UPDATE's own guard
 * decides (no read-then-write), and a concurrent verify that waited for the
 * row lock re-checks it against the committed row and skips. The answer
 * carries the new `last_used_at` when this call wrote it.
 */
export const VERIFY_API_KEY = statement<{ keyHash: string }>(
  "verify_api_key",
  sql`
    with live as (
      select * from api_key
      where key_hash = ${sql.placeholder("keyHash")}
        and revoked_at is null and (expires_at is null or expires_at > now())
    ), touched as (
      update api_key set last_used_at = now()
      where key_hash = ${sql.placeholder("keyHash")}
        and revoked_at is null and (expires_at is null or expires_at > now())
        and (last_used_at is null or last_used_at <= now() - interval '1 minute')
      returning last_used_at
    )
    select k.key_hash, k.user_id, k.name, k.prefix, k.created_at, k.expires_at,
           coalesce(t.last_used_at, k.last_used_at) as last_used_at, k.revoked_at,
           u.name as user_name, u.email, u.created_at as user_created_at, u.password_hash is not null as has_password,
           u.is_admin
    from live k
    join "user" u on u.user_id = k.user_id
    left join touched t on true`,
);

/**
 * One use of a refresh token: retires the presented one (`revoked_at`,
 * `replaced_by` = the successor's hash) only if it is live, and inserts the
 * successor in the same family, in one statement. The UPDATE's guard
 * (`revoked_at is null and replaced_by is null`) is what makes it one use:
 * a concurrent rotation of the same token waits for the row lock, re-checks
 * the guard against the committed row, matches nothing and inserts nothing.
 */
export const ROTATE_REFRESH_TOKEN = statement<{ oldHash: string; newHash: string; ttlSecs: number }>(
  "rotate_refresh_token",
  sql`
    with old as (
      update refresh_token set revoked_at = now(), replaced_by = ${sql.placeholder("newHash")}
      where token_hash = ${sql.placeholder("oldHash")}
        and revoked_at is null and replaced_by is null and expires_at > now()
      returning user_id, family_id
    )
    insert into refresh_token (token_hash, user_id, family_id, expires_at)
    select ${sql.placeholder("newHash")}, user_id, family_id,
           now() + make_interval(secs => ${sql.placeholder("ttlSecs")}::int)
    from old
    returning user_id, family_id, expires_at`,
);

/**
 * Reuse detection, run after a refused rotation, as a statement of its own
 * so that it sees a concurrent rotation's commit (the rotation it lost to):
 * if the presented token was retired by a rotation (`replaced_by` set),
 * every token of its family still live is revoked. Returns the rows revoked.
 */
export const REVOKE_REUSED_FAMILY = statement<{ tokenHash: string }>(
  "revoke_reused_family",
  sql`
    update refresh_token set revoked_at = now()
    where family_id = (
        select family_id from refresh_token
        where token_hash = ${sql.placeholder("tokenHash")} and replaced_by is not null
      )
      and revoked_at is null
    returning token_hash`,
);
