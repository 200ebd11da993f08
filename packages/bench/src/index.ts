export { type BenchOptions, type BenchResult, DEFAULTS, QUICK, runBench } from "./bench.js";
