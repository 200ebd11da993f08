import { stroemTestConfig } from "@stroem/testing/config";

export default stroemTestConfig();
