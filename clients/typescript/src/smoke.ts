// Calls a running decision/feedback pair through the loopwise client: decide for one
// unit, then log an outcome of that decision twice (the second time must be a
// duplicate), and print what it got as one JSON object; exit 1 on any error. TLS (with
// --ca, and --cert/--key for mutual TLS) unless --insecure; the token from --token or
// LOOPWISE_TOKEN.
//
//   node dist/smoke.js --decision 127.0.0.1:50051 --feedback 127.0.0.1:50052 \
//       --ca ca.crt --cert client.crt --key client.key \
//       --use-case checkout_upsell --feature basket_value=42.5 --feature device=mobile
//
// With --pause it then waits for a line on standard input and decides once more
// (printing a second JSON object): a test stops the decision service meanwhile to see
// the local fallback to the default learned at the first contact.
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { Client, type Decision, type FeatureInput } from "./index.js";

function fail(message: string): never {
  process.stderr.write(`smoke: ${message}\n`);
  process.exit(1);
}

function pairs(texts: string[], what: string): Array<[string, string]> {
  return texts.map((text) => {
    const at = text.indexOf("=");
    if (at <= 0) fail(`want ${what}, got ${JSON.stringify(text)}`);
    return [text.slice(0, at), text.slice(at + 1)];
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      decision: { type: "string", default: "127.0.0.1:50051" },
      feedback: { type: "string", default: "127.0.0.1:50052" },
      ca: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
      "server-name": { type: "string" },
      insecure: { type: "boolean", default: false },
      token: { type: "string", default: process.env.LOOPWISE_TOKEN ?? "" },
      "deadline-ms": { type: "string" },
      "use-case": { type: "string" },
      unit: { type: "string", default: "ts-smoke-unit" },
      outcome: { type: "string", default: "purchase" },
      value: { type: "string", default: "1" },
      feature: { type: "string", multiple: true, default: [] },
      default: { type: "string", multiple: true, default: [] },
      pause: { type: "boolean", default: false },
    },
  });
  const useCase = values["use-case"];
  if (!useCase) fail("--use-case is required");
  const features: Record<string, FeatureInput> = {};
  for (const [name, raw] of pairs(values.feature, "name=value")) {
    const number = Number(raw);
    features[name] = raw !== "" && Number.isFinite(number) ? number : raw;
  }
  const client = new Client({
    decisionAddress: values.decision, feedbackAddress: values.feedback,
    caFile: values.ca, certFile: values.cert, keyFile: values.key, serverName: values["server-name"],
    insecure: values.insecure, token: values.token,
    deadlineMs: values["deadline-ms"] === undefined ? undefined : Number(values["deadline-ms"]),
    defaults: Object.fromEntries(pairs(values.default, "use_case=action")),
  });
  try {
    const decide = async (): Promise<Record<string, unknown>> => {
      const d: Decision = await client.decide(useCase, features, values.unit);
      const probability = d.probabilities[d.action];
      if (!d.decisionId || !d.action || probability === undefined) {
        fail(`decide answered without a decision id, an action or its probability: ${JSON.stringify(d)}`);
      }
      return {
        decision_id: d.decisionId, action: d.action, action_index: d.actionIndex, fallback: d.fallback,
        probability, model_version: d.modelVersion, accepted: 0, duplicates: 0, retry_accepted: 0,
      };
    };
    const first = await decide();
    if (values.outcome) {
      const outcome = {
        useCase, decisionId: String(first.decision_id), outcomeId: `ts-smoke-${String(first.decision_id)}`,
        name: values.outcome, value: Number(values.value),
      };
      const logged = await client.logOutcomes([outcome]);
      const again = await client.logOutcomes([outcome]); // the same outcome id: a no-op
      Object.assign(first, { accepted: logged.accepted, duplicates: again.duplicates, retry_accepted: again.accepted });
    }
    console.log(JSON.stringify(first));
    if (values.pause) {
      const lines = createInterface({ input: process.stdin });
      await new Promise<void>((resolve, reject) => {
        lines.once("line", () => resolve());
        lines.once("close", () => reject(new Error("standard input closed")));
      });
      lines.close();
      console.log(JSON.stringify(await decide()));
    }
  } finally {
    client.close();
  }
}

main().catch((error: unknown) => fail(error instanceof Error ? `${error.name}: ${error.message}` : String(error)));
