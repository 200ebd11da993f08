import { FlowValidationError } from "./errors.js";
import type { Flow, FlowProblem, FlowStep } from "./types.js";

const own = (flow: Flow, name: string) => Object.hasOwn(flow, name);

/** A step's action: `actionName`, or `action` (the design note's and Strøm's name). */
export function stepAction(step: FlowStep | undefined): string | undefined {
  if (typeof step?.actionName === "string") return step.actionName;
  return typeof step?.action === "string" ? step.action : undefined;
}

/**
 * Checks that `flow` can run and returns its steps in a topological order
 * (every step after all its dependencies; ties in the flow's own order).
 * Throws `FlowValidationError` listing every problem: an empty flow, empty
 * names, steps without an action, unknown, repeated or self dependencies, and
 * each cycle as its path (`a -> b -> c -> a`: each step runs after the one
 * before it). O(steps + dependencies); iterative, so deep chains are fine.
 */
export function validateFlow(flow: Flow): string[] {
  const names = Object.keys(flow);
  const problems: FlowProblem[] = [];
  if (names.length === 0) problems.push({ kind: "empty-flow", message: "the flow has no steps" });

  for (const name of names) {
    const step = flow[name] as FlowStep;
    if (name.trim() === "") problems.push({ kind: "empty-name", message: "a step has an empty name" });
    const action = stepAction(step);
    if (action === undefined || action.trim() === "") {
      problems.push({ kind: "missing-action", step: name, message: `step "${name}" has no action` });
    } else if (
      typeof step.action === "string" &&
      typeof step.actionName === "string" &&
      step.action !== step.actionName
    ) {
      problems.push({
        kind: "conflicting-action",
        step: name,
        message: `step "${name}" names two actions: action "${step.action}" and actionName "${step.actionName}"`,
      });
    }
    const seen = new Set<string>();
    for (const dep of step?.dependsOn ?? []) {
      if (seen.has(dep)) {
        problems.push({
          kind: "duplicate-dependency",
          step: name,
          dependency: dep,
          message: `step "${name}" lists dependency "${dep}" twice`,
        });
        continue;
      }
      seen.add(dep);
      if (dep === name) {
        problems.push({ kind: "self-dependency", step: name, message: `step "${name}" depends on itself` });
      } else if (!own(flow, dep)) {
        problems.push({
          kind: "unknown-dependency",
          step: name,
          dependency: dep,
          message: `step "${name}" depends on unknown step "${dep}"`,
        });
      }
    }
  }

  const { order, remaining } = kahn(flow, names);
  if (remaining.length > 0) {
    for (const path of findCycles(flow, remaining)) {
      problems.push({ kind: "cycle", path, message: `cycle: ${path.join(" -> ")}` });
    }
  }
  if (problems.length > 0) throw new FlowValidationError(problems);
  return order;
}

/** Distinct, known, non-self dependencies of a step. */
function edges(flow: Flow, name: string): string[] {
  const deps = flow[name]?.dependsOn ?? [];
  return [...new Set(deps)].filter((d) => d !== name && own(flow, d));
}

/** Kahn's algorithm; `remaining` holds the steps on or behind a cycle. */
function kahn(flow: Flow, names: string[]): { order: string[]; remaining: string[] } {
  const waiting = new Map<string, number>();
  const dependants = new Map<string, string[]>();
  for (const name of names) {
    const deps = edges(flow, name);
    waiting.set(name, deps.length);
    for (const dep of deps) {
      const list = dependants.get(dep);
      if (list) list.push(name);
      else dependants.set(dep, [name]);
    }
  }
  const order: string[] = [];
  const queue = names.filter((n) => waiting.get(n) === 0);
  for (let i = 0; i < queue.length; i++) {
    const name = queue[i] as string;
    order.push(name);
    for (const next of dependants.get(name) ?? []) {
      const left = (waiting.get(next) as number) - 1;
      waiting.set(next, left);
      if (left === 0) queue.push(next);
    }
  }
  return { order, remaining: names.filter((n) => (waiting.get(n) as number) > 0) };
}

/**
 * One cycle per strongly connected component of the steps Kahn could not
 * order (iterative Tarjan), as a path in run order ending where it began.
 */
function findCycles(flow: Flow, candidates: string[]): string[][] {
  const inSet = new Set(candidates);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  let counter = 0;

  for (const root of candidates) {
    if (index.has(root)) continue;
    const work: Array<{ node: string; deps: string[]; i: number }> = [];
    const visit = (node: string) => {
      index.set(node, counter);
      low.set(node, counter);
      counter++;
      stack.push(node);
      onStack.add(node);
      work.push({ node, deps: edges(flow, node).filter((d) => inSet.has(d)), i: 0 });
    };
    visit(root);
    while (work.length > 0) {
      const frame = work[work.length - 1] as { node: string; deps: string[]; i: number };
      if (frame.i < frame.deps.length) {
        const dep = frame.deps[frame.i++] as string;
        if (!index.has(dep)) visit(dep);
        else if (onStack.has(dep)) low.set(frame.node, Math.min(low.get(frame.node)!, index.get(dep)!));
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent.node, Math.min(low.get(parent.node)!, low.get(frame.node)!));
      if (low.get(frame.node) === index.get(frame.node)) {
        const component: string[] = [];
        let member: string;
        do {
          member = stack.pop() as string;
          onStack.delete(member);
          component.push(member);
        } while (member !== frame.node);
        if (component.length > 1) components.push(component);
      }
    }
  }

  return components.map((component) => {
    const members = new Set(component);
    const start = candidates.find((c) => members.has(c)) as string;
    // Walk dependency edges inside the component until a step repeats.
    const walk: string[] = [start];
    const at = new Map([[start, 0]]);
    let current = start;
    for (;;) {
      const next = edges(flow, current).find((d) => members.has(d)) as string;
      const seenAt = at.get(next);
      if (seenAt !== undefined) {
        // walk[k] depends on walk[k+1]; in run order the cycle reads backwards.
        const cycle = [...walk.slice(seenAt), next].reverse();
        return cycle;
      }
      at.set(next, walk.length);
      walk.push(next);
      current = next;
    }
  });
}
