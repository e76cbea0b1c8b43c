// Calls a running decision/feedback pair through the generated stubs (gRPC over HTTP/2
// with @connectrpc/connect-node): Decide for one unit, then LogOutcomes for that
// decision twice (the retry must be a duplicate). Prints one JSON object; exits 1 on
// any error.
//
//   node smoke.mjs --decision 127.0.0.1:50051 --feedback 127.0.0.1:50052 \
//       --use-case checkout_upsell --feature basket_value=42.5 --feature device=mobile
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { DecisionService } from "./gen/loopwise/decision/v1/decision_service_pb.js";
import { FeedbackService } from "./gen/loopwise/feedback/v1/feedback_service_pb.js";

const { values } = parseArgs({
  options: {
    decision: { type: "string", default: "127.0.0.1:50051" },
    feedback: { type: "string", default: "127.0.0.1:50052" },
    "use-case": { type: "string" },
    unit: { type: "string", default: "ts-smoke-unit" },
    outcome: { type: "string", default: "purchase" },
    value: { type: "string", default: "1" },
    feature: { type: "string", multiple: true, default: [] },
  },
});

function fail(message) {
  process.stderr.write(`smoke: ${message}\n`);
  process.exit(1);
}

if (!values["use-case"]) fail("--use-case is required");
const features = {};
for (const text of values.feature) {
  const at = text.indexOf("=");
  if (at <= 0) fail(`want name=value, got ${JSON.stringify(text)}`);
  const name = text.slice(0, at);
  const raw = text.slice(at + 1);
  const number = Number(raw);
  features[name] = raw !== "" && Number.isFinite(number)
    ? { value: { case: "number", value: number } }
    : { value: { case: "category", value: raw } };
}
const headers = process.env.LOOPWISE_TOKEN ? { authorization: `Bearer ${process.env.LOOPWISE_TOKEN}` } : {};
const transport = (address) => createGrpcTransport({ baseUrl: `http://${address}` });
const decision = createClient(DecisionService, transport(values.decision));
const feedback = createClient(FeedbackService, transport(values.feedback));
const useCase = values["use-case"];

try {
  const decided = await decision.decide({ useCase, unitId: values.unit, features }, { headers, timeoutMs: 60000 });
  const d = decided.decision;
  if (!d?.decisionId || !d.action) fail(`Decide answered without a decision id or action: ${JSON.stringify(d)}`);
  const probability = d.actionProbabilities[d.actionIndex];
  if (probability === undefined) fail(`action index ${d.actionIndex} outside the action probabilities`);
  const request = {
    requestId: `ts-smoke-${d.decisionId}`,
    outcomes: [{ useCase, decisionId: d.decisionId, outcomeId: `ts-smoke-${d.decisionId}`,
                 name: values.outcome, value: Number(values.value) }],
  };
  const logged = await feedback.logOutcomes(request, { headers, timeoutMs: 60000 });
  const retried = await feedback.logOutcomes(request, { headers, timeoutMs: 60000 });
  console.log(JSON.stringify({
    decision_id: d.decisionId, action: d.action, fallback: d.fallback, probability,
    accepted: logged.accepted, duplicates: retried.duplicates, retry_accepted: retried.accepted,
  }));
} catch (error) {
  fail(`${error.name}: ${error.message}`);
}
