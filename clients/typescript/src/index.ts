/**
 * The loopwise client for TypeScript and JavaScript (Node.js, @grpc/grpc-js): how a
 * product backend decides and logs outcomes, with the Python SDK's behaviour.
 *
 *     const client = new Client({ decisionAddress, feedbackAddress, caFile, certFile, keyFile, token });
 *     const d = await client.decide("checkout_upsell", { basket_value: 42, region: "north" }, "customer-17");
 *     await client.logOutcomes([{ useCase: "checkout_upsell", decisionId: d.decisionId,
 *                                 outcomeId: "order-981", name: "purchase", value: 35.7 }]);
 *
 * The generated stubs are re-exported as namespaces (decisionv1, feedbackv1, trainerv1,
 * evaluatorv1, blueprintv1, operationv1) and importable from "@loopwise/client/gen/...".
 */
export {
  Client, decisionTimeMs,
  type CallOptions, type DecideOptions, type Decision, type FeatureInput, type LogResult, type Outcome,
  type UseCaseDefault,
} from "./client.js";
export {
  BULK_DEADLINE_MS, DEFAULT_DEADLINE_MS, DEFAULT_DECISION_ADDRESS, DEFAULT_FEEDBACK_ADDRESS, DEFAULT_RETRIES,
  configFromEnv, resolveConfig, type ClientConfig, type ResolvedConfig,
} from "./config.js";
export { ConfigError, DecisionUnavailableError, FeatureError, LoopwiseError, codeName, type FieldViolation } from "./errors.js";
export { BACKOFF_MS, PUSHBACK_KEY, pushbackOf, retryDelayMs } from "./retry.js";
export { callOnce, methodPath, type UnaryMethod } from "./rpc.js";
export { newUuid7, uuid7TimeMs } from "./uuid7.js";
export { status as Status } from "@grpc/grpc-js";
export * as decisionv1 from "../gen/loopwise/decision/v1/decision_service_pb.js";
export * as feedbackv1 from "../gen/loopwise/feedback/v1/feedback_service_pb.js";
export * as trainerv1 from "../gen/loopwise/trainer/v1/trainer_service_pb.js";
export * as evaluatorv1 from "../gen/loopwise/evaluator/v1/evaluator_service_pb.js";
export * as blueprintv1 from "../gen/loopwise/common/v1/blueprint_pb.js";
export * as operationv1 from "../gen/loopwise/common/v1/operation_pb.js";
