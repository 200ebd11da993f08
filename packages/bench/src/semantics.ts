/**
 * What a candidate model of section 8 must do besides draining a queue,
 * checked on a handful of jobs in the measurement's database (not timed):
 * the join of a diamond promoted once, after both parents, whose reports
 * race on two connections; a report with a wrong attempt or worker refused;
 * a failure back to ready with a backoff, then failed for good at its last
 * attempt (the job failed); a cancel (the job cancelled, the running step's
 * report recorded without promoting); a dead worker's lease rescued and its
 * late report refused; a lease past its deadline failed and retried.
 * Returns what went wrong (empty when all is well).
 */
import { randomUUID } from "node:crypto";
import { createPool, type Database } from "@stroem/repos";
import { installModel, MODELS, type Model, type ModelName, seedModel } from "./models.js";
import { DIAMOND, FLAT } from "./seed.js";

interface Lease {
  job_id: string;
  step_name: string;
  attempt: number;
}

export async function modelSemantics(url: string, name: ModelName, schema: string): Promise<string[]> {
  const m: Model = MODELS[name](schema);
  const a = createPool(url, { max: 1, statementTimeoutMs: 10_000, applicationName: "stroem-bench-semantics" });
  const b = createPool(url, { max: 1, statementTimeoutMs: 10_000, applicationName: "stroem-bench-semantics" });
  const problems: string[] = [];
  const expect = (what: string, got: unknown, want: unknown) => {
    const g = JSON.stringify(got);
    const w = JSON.stringify(want);
    if (g !== w) problems.push(`${name}: ${what}: got ${g}, want ${w}`);
  };
  const w1 = randomUUID();
  const w2 = randomUUID();
  const w3 = randomUUID();
  const rows = async <R>(db: Database, text: string, values: unknown[] = []) =>
    (await db.$client.query(text, values)).rows as R[];
  const claim = (db: Database, worker: string, action: string, limit = 1) =>
    rows<Lease>(db, m.claim(limit), [worker, action]);
  const complete = (db: Database, worker: string, leases: readonly Lease[]) =>
    rows(db, m.complete, [
      leases.map((l) => l.job_id),
      leases.map((l) => l.step_name),
      leases.map((l) => l.attempt),
      worker,
    ]);
  const fail = async (worker: string, l: Lease, error: string) =>
    (await rows<{ result: string }>(a, m.fail, [l.job_id, l.step_name, l.attempt, worker, error]))[0]?.result;
  const steps = async (job: string) =>
    Object.fromEntries(
      (await rows<{ step_name: string; status: string }>(a, m.steps, [job])).map((r) => [r.step_name, r.status]),
    );
  const jobStatus = async (job: string) => (await rows<{ status: string }>(a, m.job, [job]))[0]?.status;
  try {
    await installModel(a, m, 0, FLAT);
    await a.$client.query(
      `insert into ${schema}.worker (worker_id, last_seen) values ($1, now()), ($2, now()), ($3, now() - interval '1 hour')`,
      [w1, w2, w3],
    );

    // A diamond: a, then b and c on two connections reported at once, then d once.
    const [dj] = await seedModel(a, m, 1, DIAMOND, { actionType: "dag" });
    const d = dj as string;
    expect("a new diamond's job", await jobStatus(d), "pending");
    const [la] = await claim(a, w1, "dag", 10);
    expect("the diamond's first claim", la?.step_name, "a");
    expect("the job once its first step is claimed", await jobStatus(d), "running");
    expect("the steps while a runs", await steps(d), { a: "running", b: "pending", c: "pending", d: "pending" });
    expect("a's report", (await complete(a, w1, [la as Lease])).length, 1);
    const [l1] = await claim(a, w1, "dag");
    const [l2] = await claim(b, w2, "dag");
    expect("b and c claimed", [l1?.step_name, l2?.step_name].sort(), ["b", "c"]);
    expect("nothing else ready while b and c run", (await claim(a, w1, "dag", 10)).length, 0);
    const [r1, r2] = await Promise.all([complete(a, w1, [l1 as Lease]), complete(b, w2, [l2 as Lease])]);
    expect("b's and c's reports", [r1.length, r2.length], [1, 1]);
    const joins = await claim(a, w1, "dag", 10);
    expect(
      "the join promoted once",
      joins.map((j) => `${j.step_name}@${j.attempt}`),
      ["d@1"],
    );
    expect("the job before its last report", await jobStatus(d), "running");
    await complete(a, w1, joins);
    expect("the diamond at the end", await steps(d), {
      a: "completed",
      b: "completed",
      c: "completed",
      d: "completed",
    });
    expect("the diamond's job at the end", await jobStatus(d), "completed");

    // The guard: a wrong attempt, a wrong worker, then the right report.
    const [gj] = await seedModel(a, m, 1, FLAT, { actionType: "guard" });
    const [g] = await claim(a, w1, "guard");
    const gl = g as Lease;
    expect("a report with a wrong attempt", (await complete(a, w1, [{ ...gl, attempt: gl.attempt + 1 }])).length, 0);
    expect("a report by another worker", (await complete(a, w2, [gl])).length, 0);
    expect("a failure with a wrong attempt", await fail(w1, { ...gl, attempt: gl.attempt + 1 }, "x"), "refused");
    expect("the guarded step meanwhile", await steps(gj as string), { run: "running" });
    expect("the right report", (await complete(a, w1, [gl])).length, 1);
    expect("a second report of the same attempt", (await complete(a, w1, [gl])).length, 0);
    expect("the guarded job", await jobStatus(gj as string), "completed");

    // Retry with backoff, then failed at the last attempt.
    const [rj] = await seedModel(a, m, 1, FLAT, { actionType: "retry", maxAttempts: 2 });
    const [r] = await claim(a, w1, "retry");
    expect("the first failure", await fail(w1, r as Lease, "boom"), "retry");
    expect("the step after a retryable failure", await steps(rj as string), { run: "ready" });
    expect("a claim during the backoff", (await claim(a, w1, "retry")).length, 0);
    await a.$client.query(`update ${schema}.live set ready_at = now() where job_id = $1`, [rj]); // the backoff has passed
    const [r2nd] = await claim(a, w2, "retry");
    expect("the retry's attempt", r2nd?.attempt, 2);
    expect("the first attempt's late report", (await complete(a, w1, [r as Lease])).length, 0);
    expect("the last failure", await fail(w2, r2nd as Lease, "boom"), "failed");
    expect("the job after its last attempt failed", await jobStatus(rj as string), "failed");

    // A failed step fails its job and cancels the steps not started.
    const [fj] = await seedModel(a, m, 1, DIAMOND, { actionType: "fdag", maxAttempts: 1 });
    const [fa] = await claim(a, w1, "fdag");
    expect("a diamond's root failing", await fail(w1, fa as Lease, "boom"), "failed");
    expect("the failed diamond", await jobStatus(fj as string), "failed");
    expect("the failed diamond's steps", await steps(fj as string), {
      a: "failed",
      b: "cancelled",
      c: "cancelled",
      d: "cancelled",
    });
    expect("a claim in the failed diamond", (await claim(a, w1, "fdag", 10)).length, 0);

    // Cancel: a running a's report is recorded, nothing is promoted.
    const [cj] = await seedModel(a, m, 1, DIAMOND, { actionType: "cancel" });
    const [ca] = await claim(a, w1, "cancel");
    expect("cancel", (await rows<{ cancelled: number }>(a, m.cancel, [cj]))[0]?.cancelled, 1);
    expect("the cancelled job", await jobStatus(cj as string), "cancelled");
    expect("the running step's report after the cancel", (await complete(a, w1, [ca as Lease])).length, 1);
    expect("a claim in the cancelled job", (await claim(a, w1, "cancel", 10)).length, 0);
    expect("the cancelled job's steps", await steps(cj as string), {
      a: "completed",
      b: "cancelled",
      c: "cancelled",
      d: "cancelled",
    });
    const [cq] = await seedModel(a, m, 1, FLAT, { actionType: "cancel1" });
    expect("cancel of a queued one-step job", (await rows<{ cancelled: number }>(a, m.cancel, [cq]))[0]?.cancelled, 1);
    expect("the cancelled one-step job", await jobStatus(cq as string), "cancelled");
    expect("a claim of the cancelled one-step job", (await claim(a, w1, "cancel1")).length, 0);

    // Rescue: w3's heartbeat is an hour old.
    const [kj] = await seedModel(a, m, 1, FLAT, { actionType: "rescue" });
    const [k] = await claim(a, w3, "rescue");
    const [fresh] = await seedModel(a, m, 1, FLAT, { actionType: "rescue-live" });
    const [kl] = await claim(a, w1, "rescue-live");
    expect("rescue", (await rows<{ n: number }>(a, m.rescue, [60]))[0]?.n, 1);
    expect("the rescued step", await steps(kj as string), { run: "ready" });
    expect("a live worker's lease after the rescue", await steps(fresh as string), { run: "running" });
    const [k2] = await claim(a, w1, "rescue");
    expect("the rescued step's next attempt", k2?.attempt, (k?.attempt ?? 0) + 1);
    expect("the dead worker's late report", (await complete(a, w3, [k as Lease])).length, 0);
    expect("the new lease's report", (await complete(a, w1, [k2 as Lease])).length, 1);
    await complete(a, w1, [kl as Lease]);

    // A timeout: a lease with a 0 s timeout is past its deadline at once.
    const [tj] = await seedModel(a, m, 1, FLAT, { actionType: "timeout", timeoutS: 0 });
    const [t] = await claim(a, w1, "timeout");
    const late = await rows<Lease & { worker_id: string }>(a, m.timedOut);
    expect(
      "leases past their deadline",
      late.map((l) => l.job_id),
      [tj],
    );
    for (const l of late) expect("the timeout's failure", await fail(l.worker_id, l, "timed out"), "retry");
    expect("the timed-out step", await steps(tj as string), { run: "ready" });
    expect("the timed-out worker's late report", (await complete(a, w1, [t as Lease])).length, 0);
  } catch (error) {
    problems.push(`${name}: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    await a.$client.end();
    await b.$client.end();
  }
  return problems;
}
