/** Plain-text tables and small formatting helpers for terminal output. */

/**
 * A table with a header and a rule. `align` gives each column's alignment,
 * `l`eft or `r`ight, as a string (`"llrrl"`); by default the first column is
 * left-aligned and the others (numbers, mostly) right-aligned.
 */
export function table(headers: string[], rows: Array<Array<string | number>>, align?: string): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const left = (i: number) => (align ? align[i] !== "r" : i === 0);
  const line = (r: string[]) =>
    r
      .map((c, i) => (left(i) ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "─".repeat(w)).join("  ");
  return [line(headers), rule, ...cells.slice(1).map(line)].join("\n");
}

export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(ms / 60_000);
  return `${m}m${Math.round((ms % 60_000) / 1000)}s`;
}

export function age(since: Date | null, now: Date): string {
  return since ? duration(Math.max(0, now.getTime() - since.getTime())) : "never";
}

export function bar(fraction: number, width = 24): string {
  const filled = Math.round(Math.min(1, Math.max(0, fraction)) * width);
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
}

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 } as const;

/** `30d`, `12h`, `90m`, `45s` as milliseconds; undefined for anything else. */
export function parseAge(value: string): number | undefined {
  const m = /^(\d{1,6})([dhms])$/.exec(value.trim());
  if (!m) return undefined;
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}

const BLOCKS = "▁▂▃▄▅▆▇█";

/**
 * One character per value, scaled to the largest: `▁` is exactly zero, `▂`
 * to `█` the rest (any value above zero shows above the baseline).
 */
export function sparkline(values: readonly number[]): string {
  const max = Math.max(0, ...values);
  return values.map((v) => (v <= 0 || max === 0 ? BLOCKS[0] : BLOCKS[Math.max(1, Math.ceil((v / max) * 7))])).join("");
}

/** A duration in ms for the stats table, or `–` when there is none. */
export function maybeDuration(ms: number | null): string {
  return ms === null ? "–" : duration(ms);
}
