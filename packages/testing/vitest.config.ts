// This package tests its own built fixture (turbo builds before testing).
import { stroemTestConfig } from "./dist/config.js";

export default stroemTestConfig();
