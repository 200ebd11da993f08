/** Small statistics for the bench table: medians and spreads of a handful of measurements. */

/** The value at quantile `q` (0 to 1) of `values`, interpolated; NaN for an empty list. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  const a = sorted[lo]!;
  const b = sorted[hi]!;
  return a + (b - a) * (at - lo);
}

export const median = (values: readonly number[]): number => quantile(values, 0.5);

/** Median and range of repeated measurements of one figure. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  /** The measurements themselves, in the order taken. */
  values: number[];
}

export function summarize(values: readonly number[]): Summary {
  return {
    median: median(values),
    min: Math.min(...values),
    max: Math.max(...values),
    values: [...values],
  };
}

/** A number for the table: 3 significant digits below 100, thousands separated above. */
export function fmt(value: number): string {
  if (!Number.isFinite(value)) return "–";
  if (Math.abs(value) >= 100 || Number.isInteger(value)) return Math.round(value).toLocaleString("en-US");
  return value.toPrecision(3);
}

/** `median (min–max)`, or the median alone for a single measurement. */
export function fmtSummary(s: Summary | undefined): string {
  if (!s || s.values.length === 0) return "–";
  if (s.values.length === 1) return fmt(s.median);
  return `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`;
}

/** `a / b` as `0.12x`; `–` when either side is missing. */
export function fmtRatio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "–";
  const r = a / b;
  return `${r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2)}x`;
}
