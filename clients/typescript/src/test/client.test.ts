// The client's behaviour against an in-process @grpc/grpc-js server: deadlines, retries
// with backoff and jitter, the server's pushback, no retry of other codes, the local
// fallback to the default decision, outcomes in batches, the token.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Metadata, status as Status } from "@grpc/grpc-js";
import { LogOutcomesResponseSchema } from "../../gen/loopwise/feedback/v1/feedback_service_pb.js";
import {
  Client, ConfigError, DecisionUnavailableError, FeatureError, LoopwiseError, configFromEnv, decisionTimeMs,
  newUuid7, pushbackOf, retryDelayMs, uuid7TimeMs, type ClientConfig,
} from "../index.js";
import {
  Fake, badRequest, retryInfo, served, shed, statusDetails, unavailable,
} from "./fake.js";

const UUID7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const fakes: Fake[] = [];
const clients: Client[] = [];

after(() => {
  for (const client of clients) client.close();
  for (const fake of fakes) fake.stop();
});

async function startFake(): Promise<Fake> {
  const fake = await new Fake().start();
  fakes.push(fake);
  return fake;
}

function clientOf(fake: Fake | string, config: ClientConfig = {}): Client {
  const address = typeof fake === "string" ? fake : fake.address;
  const client = new Client({ decisionAddress: address, feedbackAddress: address, insecure: true, ...config });
  clients.push(client);
  return client;
}

/** A loopback address where nothing listens. */
async function freeAddress(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address && typeof address === "object");
  return `127.0.0.1:${address.port}`;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
}

describe("decide", () => {
  test("sends the features and the token, and learns the default at the first contact", async () => {
    const fake = await startFake();
    const client = clientOf(fake, { token: "lw_secret" });
    const d = await client.decide("offer", { x: 1.5, n: 3, big: 7n, mobile: true, country: "de", missing: null },
      "unit-1", { disableExploration: true, arm: "treatment" });
    const request = fake.decideRequests[0]!;
    assert.equal(request.useCase, "offer");
    assert.equal(request.unitId, "unit-1");
    assert.equal(request.disableExploration, true);
    assert.equal(request.arm, "treatment");
    const numbers: Record<string, number> = { x: 1.5, n: 3, big: 7, mobile: 1 };
    for (const [name, want] of Object.entries(numbers)) {
      assert.deepEqual(request.features[name]?.value, { case: "number", value: want }, name);
    }
    assert.deepEqual(request.features.country?.value, { case: "category", value: "de" });
    assert.equal(request.features.missing?.value.case, undefined);
    assert.deepEqual(fake.authorization, ["Bearer lw_secret", "Bearer lw_secret"]);
    assert.equal(fake.getUseCases, 1);
    assert.equal(d.action, "yes");
    assert.equal(d.actionIndex, 1);
    assert.equal(d.fallback, false);
    assert.equal(d.modelVersion, 4);
    assert.deepEqual(d.probabilities, { no: 0.2, yes: 0.8 });
    assert.ok(Math.abs(Date.now() - decisionTimeMs(d)) < 60_000);
    assert.deepEqual(client.defaultFor("offer"), { action: "no", score: 0.25, actions: ["no", "yes"], blueprintVersion: 3 });
    await client.decide("offer", {}, "");
    assert.equal(fake.getUseCases, 1, "known now: no second GetUseCase");
  });

  test("retries UNAVAILABLE with exponential backoff and jitter", async () => {
    const fake = await startFake();
    fake.decide = (n, r) => (n < 2 ? unavailable() : served(r.useCase));
    const d = await clientOf(fake, { deadlineMs: 2000 }).decide("offer", {}, "u");
    assert.equal(d.fallback, false);
    assert.equal(fake.decideRequests.length, 3);
    const [first, second] = fake.gaps();
    // attempt n waits in [50 * 2^n / 2, 50 * 2^n] ms: [25, 50] then [50, 100].
    assert.ok(first! >= 24 && second! >= 49 && second! < 1000, `gaps ${fake.gaps()}`);
  });

  test("retries at most `retries` times, then falls back or says why", async () => {
    const fake = await startFake();
    fake.decide = () => unavailable();
    const error = await rejection(clientOf(fake, { deadlineMs: 5000, retries: 4 }).decide("offer", {}, "u"));
    assert.ok(error instanceof DecisionUnavailableError, String(error));
    assert.equal(error.code, Status.UNAVAILABLE);
    assert.equal(error.cause.attempts, 5);
    assert.equal(error.cause.retryable, true);
    assert.equal(fake.decideRequests.length, 5);
    assert.match(error.message, /no default decision known for use case "offer"/);

    const single = await startFake();
    single.decide = () => unavailable();
    await rejection(clientOf(single, { retries: 0 }).decide("offer", {}, "u"));
    assert.equal(single.decideRequests.length, 1, "retries: 0 makes one attempt");
  });

  test("never retries INVALID_ARGUMENT nor falls back from it", async () => {
    const fake = await startFake();
    fake.decide = () => ({
      code: Status.INVALID_ARGUMENT, details: "feature 'x': not a number",
      metadata: statusDetails(Status.INVALID_ARGUMENT, "feature 'x': not a number",
        "type.googleapis.com/google.rpc.BadRequest", badRequest("features.x", "not a number")),
    });
    const error = await rejection(clientOf(fake, { defaults: { offer: "no" } }).decide("offer", { x: "abc" }, "u"));
    assert.ok(error instanceof LoopwiseError, String(error));
    assert.equal(error.code, Status.INVALID_ARGUMENT);
    assert.equal(error.codeName, "INVALID_ARGUMENT");
    assert.equal(error.attempts, 1);
    assert.equal(error.retryable, false);
    assert.deepEqual(error.violations, [{ field: "features.x", description: "not a number" }]);
    assert.match(error.message, /Decide: INVALID_ARGUMENT: feature 'x': not a number/);
    assert.equal(fake.decideRequests.length, 1);
    for (const code of [Status.NOT_FOUND, Status.PERMISSION_DENIED, Status.UNAUTHENTICATED, Status.INTERNAL]) {
      const other = await startFake();
      other.decide = () => ({ code, details: "no" });
      const failed = await rejection(clientOf(other, { defaults: { offer: "no" } }).decide("offer", {}, "u"));
      assert.ok(failed instanceof LoopwiseError && failed.code === code, String(failed));
      assert.equal(other.decideRequests.length, 1);
    }
  });

  test("waits the pushback of the grpc-retry-pushback-ms trailer", async () => {
    const fake = await startFake();
    fake.decide = (n, r) => (n === 0 ? shed("150") : served(r.useCase));
    const d = await clientOf(fake, { deadlineMs: 3000 }).decide("offer", {}, "u");
    assert.equal(d.fallback, false);
    const [gap] = fake.gaps();
    assert.ok(gap! >= 149 && gap! < 225 + 200, `gap ${gap}`);
  });

  test("waits the pushback of a google.rpc.RetryInfo detail", async () => {
    const fake = await startFake();
    fake.decide = (n, r) => (n === 0 ? {
      code: Status.RESOURCE_EXHAUSTED, details: "rate limit",
      metadata: statusDetails(Status.RESOURCE_EXHAUSTED, "rate limit", "type.googleapis.com/google.rpc.RetryInfo",
        retryInfo(120)),
    } : served(r.useCase));
    await clientOf(fake, { deadlineMs: 3000 }).decide("offer", {}, "u");
    const [gap] = fake.gaps();
    assert.ok(gap! >= 119, `gap ${gap}`);
  });

  test("RESOURCE_EXHAUSTED without pushback is final", async () => {
    const fake = await startFake();
    fake.decide = () => ({ code: Status.RESOURCE_EXHAUSTED, details: "message larger than max" });
    const error = await rejection(clientOf(fake, { defaults: { offer: "no" } }).decide("offer", {}, "u"));
    assert.ok(error instanceof LoopwiseError && error.code === Status.RESOURCE_EXHAUSTED, String(error));
    assert.equal(error.pushbackMs, undefined);
    assert.equal(fake.decideRequests.length, 1);
  });

  test("a negative or unreadable pushback stops the retries and falls back", async () => {
    for (const value of ["-1", "soon"]) {
      const fake = await startFake();
      fake.decide = () => shed(value);
      const d = await clientOf(fake, { defaults: { offer: "no" } }).decide("offer", {}, "u");
      assert.equal(d.fallback, true);
      assert.equal(d.action, "no");
      assert.equal(fake.decideRequests.length, 1);
    }
  });

  test("a pushback beyond the deadline falls back at once", async () => {
    const fake = await startFake();
    fake.decide = () => shed("5000");
    const start = performance.now();
    const d = await clientOf(fake, { deadlineMs: 300, defaults: { offer: "yes" } }).decide("offer", {}, "u");
    assert.equal(d.fallback, true);
    assert.equal(d.action, "yes");
    assert.equal(fake.decideRequests.length, 1);
    assert.ok(performance.now() - start < 250);
  });

  test("falls back to the learned default when the service stops", async () => {
    const fake = await startFake();
    const client = clientOf(fake);
    await client.decide("offer", {}, "u");
    fake.stop();
    const start = Date.now();
    const d = await client.decide("offer", { x: 1 }, "u");
    assert.equal(d.fallback, true);
    assert.equal(d.action, "no");
    assert.equal(d.actionIndex, 0);
    assert.equal(d.score, 0.25);
    assert.equal(d.blueprintVersion, 3);
    assert.equal(d.modelVersion, 0);
    assert.deepEqual(d.probabilities, { no: 1, yes: 0 });
    assert.match(d.decisionId, UUID7);
    assert.ok(decisionTimeMs(d) >= start - 1000 && decisionTimeMs(d) <= Date.now() + 1000);
    assert.ok(Date.now() - start < 1000);
  });

  test("falls back to a given default without any contact", async () => {
    const nowhere = await freeAddress();
    const client = clientOf(nowhere, { defaults: { offer: "no_offer" } });
    const d = await client.decide("offer", {}, "u");
    assert.equal(d.fallback, true);
    assert.equal(d.action, "no_offer");
    assert.deepEqual(d.probabilities, { no_offer: 1 });
    const error = await rejection(client.decide("other", {}, "u"));
    assert.ok(error instanceof DecisionUnavailableError, String(error));
    assert.equal(error.useCase, "other");
    assert.equal(error.code, Status.UNAVAILABLE);
    assert.equal(error.cause.attempts, 3);
  });

  test("the deadline bounds the call and its retries, then falls back", async () => {
    const fake = await startFake();
    fake.decide = () => new Promise((resolve) => setTimeout(() => resolve(unavailable()), 2000));
    const client = clientOf(fake, { deadlineMs: 200, defaults: { offer: "no" } });
    const start = performance.now();
    const d = await client.decide("offer", {}, "u");
    const elapsed = performance.now() - start;
    assert.equal(d.fallback, true);
    assert.ok(elapsed >= 190 && elapsed < 700, `elapsed ${elapsed}`);
    assert.equal(fake.decideRequests.length, 1, "DEADLINE_EXCEEDED is not retried");
    // A caller's cancellation is not a fallback.
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const cancelled = await rejection(clientOf(fake, { deadlineMs: 5000, defaults: { offer: "no" } })
      .decide("offer", {}, "u", { signal: controller.signal }));
    assert.ok(cancelled instanceof LoopwiseError && cancelled.code === Status.CANCELLED, String(cancelled));
  });

  test("refuses a feature value it cannot send", async () => {
    const client = clientOf(await freeAddress());
    const error = await rejection(client.decide("offer", { when: new Date() as unknown as string }, "u"));
    assert.ok(error instanceof FeatureError && error.feature === "when", String(error));
  });
});

describe("logOutcomes", () => {
  test("sends batches of 5,000, retries UNAVAILABLE, sums the counts", async () => {
    const fake = await startFake();
    fake.logOutcomes = (n, r) => (n === 0 ? unavailable()
      : create(LogOutcomesResponseSchema, { accepted: r.outcomes.length - 1, duplicates: 1 }));
    const client = clientOf(fake, { token: "lw_t" });
    const when = Date.UTC(2026, 2, 1, 12);
    const outcomes = Array.from({ length: 5001 }, (_, i) => ({
      useCase: "offer", decisionId: newUuid7(when), outcomeId: `o-${i}`, name: "purchase", value: 2.5,
    }));
    const result = await client.logOutcomes([...outcomes.slice(0, 5000),
      { ...outcomes[5000]!, eventTime: new Date(when), label: "yes", value: undefined }]);
    assert.deepEqual(result, { accepted: 4999, duplicates: 2, orphans: 0 });
    assert.deepEqual(fake.outcomeRequests.map((r) => r.outcomes.length), [5000, 5000, 1]);
    const [first, retried, second] = fake.outcomeRequests.map((r) => r.requestId);
    assert.equal(first, retried, "the retry repeats the batch with its request id");
    assert.notEqual(first, second);
    assert.match(second!, UUID7);
    const last = fake.outcomeRequests[2]!.outcomes[0]!;
    assert.equal(Number(last.eventTime?.seconds) * 1000, when);
    assert.equal(last.label, "yes");
    assert.equal(last.value, 1, "value defaults to 1");
    assert.equal(fake.outcomeRequests[1]!.outcomes[0]!.eventTime, undefined);
    assert.deepEqual(fake.authorization, ["Bearer lw_t", "Bearer lw_t", "Bearer lw_t"]);
    fake.logOutcomes = () => ({ code: Status.INVALID_ARGUMENT, details: "outcomes[0].name: empty" });
    const error = await rejection(client.logOutcome(outcomes[0]!));
    assert.ok(error instanceof LoopwiseError && error.code === Status.INVALID_ARGUMENT, String(error));
  });
});

describe("retry rules", () => {
  test("retryDelayMs", () => {
    const low = () => 0;
    const high = () => 0.999999;
    const cases: Array<[string, Status, number | undefined, number, number, [number, number] | undefined]> = [
      ["first backoff", Status.UNAVAILABLE, undefined, 0, 1000, [25, 50]],
      ["second backoff", Status.UNAVAILABLE, undefined, 1, 1000, [50, 100]],
      ["third backoff", Status.UNAVAILABLE, undefined, 2, 1000, [100, 200]],
      ["retries used up", Status.UNAVAILABLE, undefined, 3, 1000, undefined],
      ["no time left", Status.UNAVAILABLE, undefined, 0, 20, undefined],
      ["pushback", Status.RESOURCE_EXHAUSTED, 200, 0, 1000, [200, 300]],
      ["pushback on unavailable", Status.UNAVAILABLE, 400, 0, 1000, [400, 600]],
      ["pushback past the deadline", Status.RESOURCE_EXHAUSTED, 2000, 0, 1000, undefined],
      ["server asks for no retry", Status.UNAVAILABLE, -1, 0, 1000, undefined],
      ["exhausted without pushback", Status.RESOURCE_EXHAUSTED, undefined, 0, 1000, undefined],
      ["invalid argument", Status.INVALID_ARGUMENT, 100, 0, 1000, undefined],
      ["deadline exceeded", Status.DEADLINE_EXCEEDED, undefined, 0, 1000, undefined],
      ["not found", Status.NOT_FOUND, undefined, 0, 1000, undefined],
    ];
    for (const [name, code, pushback, attempt, left, range] of cases) {
      for (const random of [low, high]) {
        const delay = retryDelayMs(code, pushback, attempt, 3, left, random);
        if (range === undefined) assert.equal(delay, undefined, name);
        else assert.ok(delay !== undefined && delay >= range[0] && delay <= range[1], `${name}: ${delay}`);
      }
    }
    const seen = new Set(Array.from({ length: 50 }, () => retryDelayMs(Status.UNAVAILABLE, undefined, 0, 3, 1000)));
    assert.ok(seen.size >= 10, "the jitter spreads the waits");
  });

  test("pushbackOf", () => {
    const trailer = (value: string) => {
      const metadata = new Metadata();
      metadata.set("grpc-retry-pushback-ms", value);
      return metadata;
    };
    const info = statusDetails(Status.RESOURCE_EXHAUSTED, "limit", "type.googleapis.com/google.rpc.RetryInfo",
      retryInfo(1500));
    assert.equal(pushbackOf(new Metadata()), undefined);
    assert.equal(pushbackOf(trailer("250")), 250);
    assert.equal(pushbackOf(trailer("-3")), -1);
    assert.equal(pushbackOf(trailer("later")), -1);
    assert.equal(pushbackOf(info), 1500);
    const both = info.clone();
    both.set("grpc-retry-pushback-ms", "10");
    assert.equal(pushbackOf(both), 10, "the trailer first");
    const damaged = new Metadata();
    damaged.set("grpc-status-details-bin", Buffer.from([0xff, 0xff, 0xff]));
    assert.equal(pushbackOf(damaged), undefined);
  });

  test("UUIDv7", () => {
    const now = Date.now();
    const ids = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const id = newUuid7(now);
      assert.match(id, UUID7);
      assert.equal(uuid7TimeMs(id), now);
      ids.add(id);
    }
    assert.equal(ids.size, 1000);
    assert.equal(uuid7TimeMs("01906b97-5c00-7000-8000-000000000000"), Date.UTC(2024, 6, 1));
    assert.equal(uuid7TimeMs("0190f6a4-1b2c-4d3e-8f40-123456789abc"), undefined);
  });
});

describe("package", () => {
  test("resolves by its name: the client and the generated stubs", async () => {
    const client = await import("@loopwise/client");
    assert.equal(client.Client, Client);
    assert.equal(client.decisionv1.DecisionService.typeName, "loopwise.decision.v1.DecisionService");
    const stubs = await import("@loopwise/client/gen/loopwise/feedback/v1/feedback_service_pb.js");
    assert.equal(stubs.FeedbackService.method.logOutcomes.name, "LogOutcomes");
  });
});

describe("configuration", () => {
  test("defaults and refusals", () => {
    const client = new Client();
    clients.push(client);
    assert.equal(client.deadlineMs, 1000);
    assert.equal(client.retries, 2);
    const bad: Array<[string, ClientConfig]> = [
      ["cert", { cert: "x" }],
      ["insecure", { insecure: true, ca: "x" }],
      ["deadlineMs", { deadlineMs: -1 }],
      ["retries", { retries: 1.5 }],
      ["defaults", { defaults: { offer: "" } }],
      ["caFile", { caFile: "/nonexistent/ca.crt" }],
    ];
    for (const [field, config] of bad) {
      assert.throws(() => new Client(config), (error) => error instanceof ConfigError && error.field === field, field);
    }
  });

  test("configFromEnv reads the LOOPWISE_* variables", () => {
    const env = {
      LOOPWISE_DECISION_ADDRESS: "d:1", LOOPWISE_FEEDBACK_ADDRESS: "f:2", LOOPWISE_TLS_CA_FILE: "ca.crt",
      LOOPWISE_TLS_CERT_FILE: "service.crt", LOOPWISE_TLS_KEY_FILE: "service.key",
      LOOPWISE_TLS_CLIENT_CERT_FILE: "client.crt", LOOPWISE_TLS_CLIENT_KEY_FILE: "client.key",
      LOOPWISE_TLS_SERVER_NAME: "decision", LOOPWISE_TOKEN: "lw_x", LOOPWISE_CLIENT_DEADLINE_S: "0.25",
      LOOPWISE_CLIENT_RETRIES: "0", LOOPWISE_ALLOW_PLAINTEXT: "true",
    };
    assert.deepEqual(configFromEnv(env), {
      decisionAddress: "d:1", feedbackAddress: "f:2", caFile: "ca.crt", certFile: "client.crt",
      keyFile: "client.key", serverName: "decision", token: "lw_x", deadlineMs: 250, retries: 0,
    });
    assert.deepEqual(configFromEnv({ ...env, LOOPWISE_TLS_CA_FILE: "" }), {
      decisionAddress: "d:1", feedbackAddress: "f:2", insecure: true, token: "lw_x", deadlineMs: 250, retries: 0,
    });
    assert.throws(() => configFromEnv({ LOOPWISE_CLIENT_RETRIES: "many" }), ConfigError);
  });
});
