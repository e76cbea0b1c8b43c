import { Client as GrpcClient, Metadata, status as Status } from "@grpc/grpc-js";
import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  DecideRequestSchema, DecisionService, FeatureValueSchema, GetUseCaseRequestSchema,
  type Decision as DecisionMessage, type FeatureValue, type UseCase,
} from "../gen/loopwise/decision/v1/decision_service_pb.js";
import { FeedbackService, LogOutcomesRequestSchema, OutcomeSchema } from "../gen/loopwise/feedback/v1/feedback_service_pb.js";
import { BULK_DEADLINE_MS, resolveConfig, type ClientConfig, type ResolvedConfig } from "./config.js";
import { DecisionUnavailableError, FeatureError, LoopwiseError } from "./errors.js";
import { pushbackOf, retryDelayMs, violationsOf } from "./retry.js";
import { callOnce, isServiceError, type UnaryMethod } from "./rpc.js";
import { newUuid7, uuid7TimeMs } from "./uuid7.js";

/** The most outcomes sent in one LogOutcomes call. */
const OUTCOME_BATCH = 5000;

/** A feature value: a number (NaN: missing), a category string, a boolean (0/1), or
 * null/undefined (missing). */
export type FeatureInput = number | bigint | string | boolean | null | undefined;

/** One decision, as decide returns it. */
export interface Decision {
  /** A UUIDv7; its timestamp is the decision time (see decisionTimeMs). */
  decisionId: string;
  useCase: string;
  /** The chosen action and its index in the use case's actions. */
  action: string;
  actionIndex: number;
  /** The model's score (the default decision's score on fallback). */
  score: number;
  /** Every action's probability under the policy that chose. */
  probabilities: Record<string, number>;
  /** Every action's score (multiclass and action-value use cases). */
  actionScores: Record<string, number>;
  /** The model that scored (0: none) and the blueprint version used. */
  modelVersion: number;
  blueprintVersion: number;
  /** The unit's experiment arm. */
  arm: string;
  /** The action was chosen by exploration. */
  explored: boolean;
  /** The default decision was returned: by the service (no model, kill switch), or
   * locally by the client when loopwise could not be reached. */
  fallback: boolean;
}

/** The decision time (ms since the epoch) of a decision, from its UUIDv7 id. */
export function decisionTimeMs(decision: Pick<Decision, "decisionId">): number {
  return uuid7TimeMs(decision.decisionId) ?? 0;
}

/** An outcome to log; outcomeId is the idempotency key (the same id again is a no-op). */
export interface Outcome {
  useCase: string;
  decisionId: string;
  outcomeId: string;
  /** The outcome's name (e.g. "purchase") and value (default 1). */
  name: string;
  value?: number;
  /** The observed class, for multiclass use cases. */
  label?: string;
  /** When it happened (a Date or epoch milliseconds); unset: the server's now. */
  eventTime?: Date | number;
}

/** What logOutcomes stored. */
export interface LogResult {
  /** Stored for the first time. */
  accepted: number;
  /** Already stored (same outcome id): no-ops. */
  duplicates: number;
  /** Decision id not a plausible UUIDv7: stored as orphans. */
  orphans: number;
}

/** What the client needs to answer locally for a use case. */
export interface UseCaseDefault {
  action: string;
  score: number;
  actions: string[];
  blueprintVersion: number;
}

/** Options of one decide call. */
export interface DecideOptions {
  /** Switch exploration off (greedy choice). */
  disableExploration?: boolean;
  /** Force an experiment arm (for testing a treatment). */
  arm?: string;
  /** Cancels the call (not a fallback: the error is thrown). */
  signal?: AbortSignal;
}

/** Options of the other calls. */
export interface CallOptions {
  signal?: AbortSignal;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    function abort(): void {
      clearTimeout(timer);
      reject(signal?.reason);
    }
    if (signal?.aborted) abort();
    else signal?.addEventListener("abort", abort, { once: true });
  });
}

function featureValue(name: string, value: FeatureInput): FeatureValue {
  if (value === null || value === undefined) return create(FeatureValueSchema);
  switch (typeof value) {
    case "string":
      return create(FeatureValueSchema, { value: { case: "category", value } });
    case "number":
      return create(FeatureValueSchema, { value: { case: "number", value } });
    case "bigint":
      return create(FeatureValueSchema, { value: { case: "number", value: Number(value) } });
    case "boolean":
      return create(FeatureValueSchema, { value: { case: "number", value: value ? 1 : 0 } });
  }
  throw new FeatureError(name, value);
}

/** Names the probabilities by the use case's actions when they are known and match the
 * answer; else by the action (one probability) or by index. */
function decisionFromMessage(d: DecisionMessage | undefined, known: readonly string[]): Decision {
  const probabilities = d?.actionProbabilities ?? [];
  const index = d?.actionIndex ?? 0;
  let names: readonly string[] = known;
  if (known.length !== probabilities.length || (index < known.length && known[index] !== d?.action)) {
    names = probabilities.length === 1 ? [d?.action ?? ""] : probabilities.map((_, i) => String(i));
  }
  const byName = (values: readonly number[]): Record<string, number> => {
    const out: Record<string, number> = {};
    values.forEach((value, i) => {
      const name = names[i];
      if (name !== undefined) out[name] = value;
    });
    return out;
  };
  return {
    decisionId: d?.decisionId ?? "", useCase: d?.useCase ?? "", action: d?.action ?? "", actionIndex: index,
    score: d?.score ?? 0, probabilities: byName(probabilities), actionScores: byName(d?.actionScores ?? []),
    modelVersion: Number(d?.modelVersion ?? 0), blueprintVersion: Number(d?.blueprintVersion ?? 0),
    arm: d?.arm ?? "", explored: d?.explored ?? false, fallback: d?.fallback ?? false,
  };
}

/**
 * Client of the decision and feedback services, with the Python SDK's behaviour:
 * deadlines, retries on UNAVAILABLE and on RESOURCE_EXHAUSTED with retry pushback
 * (backoff with jitter, the server's pushback honoured), never on other codes, and a
 * local fallback to the use case's default decision when the decision service cannot be
 * reached. Safe to share; close it at the end.
 */
export class Client {
  private readonly config: ResolvedConfig;
  private readonly decisionChannel: GrpcClient;
  private readonly feedbackChannel: GrpcClient;
  private readonly learned = new Map<string, UseCaseDefault>();
  /** Randomness of the waits' jitter (replaceable in tests). */
  random: () => number = Math.random;

  constructor(config: ClientConfig = {}) {
    this.config = resolveConfig(config);
    const { credentials, channelOptions } = this.config;
    this.decisionChannel = new GrpcClient(this.config.decisionAddress, credentials, channelOptions);
    this.feedbackChannel = new GrpcClient(this.config.feedbackAddress, credentials, channelOptions);
  }

  /** The deadline of one decide call, its retries included (ms). */
  get deadlineMs(): number {
    return this.config.deadlineMs;
  }

  /** The most extra attempts of a call. */
  get retries(): number {
    return this.config.retries;
  }

  private get bulkDeadlineMs(): number {
    return Math.max(this.config.deadlineMs, BULK_DEADLINE_MS);
  }

  private metadata(): Metadata {
    const metadata = new Metadata();
    if (this.config.token) metadata.set("authorization", `Bearer ${this.config.token}`);
    return metadata;
  }

  /** One RPC within timeoutMs, retries included (see retryDelayMs). */
  private async call<I extends DescMessage, O extends DescMessage>(
    channel: GrpcClient, method: UnaryMethod<I, O>, request: MessageShape<I>, timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<MessageShape<O>> {
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await callOnce(channel, method, request, this.metadata(), new Date(deadline), signal);
      } catch (error) {
        if (!isServiceError(error)) throw error;
        const pushback = pushbackOf(error.metadata);
        const delay = retryDelayMs(error.code, pushback, attempt, this.config.retries, deadline - Date.now(),
          this.random);
        if (delay === undefined) {
          throw new LoopwiseError(method.name, error.code, error.details, attempt + 1, pushback,
            violationsOf(error.metadata), error.metadata);
        }
        try {
          await sleep(delay, signal);
        } catch {
          throw new LoopwiseError(method.name, Status.CANCELLED, "cancelled by the caller", attempt + 1, pushback,
            [], error.metadata);
        }
      }
    }
  }

  /**
   * Decides for one unit from named features (numbers, category strings, booleans,
   * null/undefined for missing). The call and its retries take at most deadlineMs.
   *
   * When the decision service cannot be reached or is shedding load, returns the use
   * case's default decision with fallback set and a local UUIDv7 id; with no default
   * known, throws DecisionUnavailableError. Any other failure (bad input, unknown use
   * case, a token without the scope) throws LoopwiseError and never falls back.
   */
  async decide(useCase: string, features: Record<string, FeatureInput> = {}, unitId = "",
               options: DecideOptions = {}): Promise<Decision> {
    const values: Record<string, FeatureValue> = {};
    for (const [name, value] of Object.entries(features)) values[name] = featureValue(name, value);
    const request = create(DecideRequestSchema, {
      useCase, unitId, features: values, disableExploration: options.disableExploration ?? false,
      arm: options.arm ?? "",
    });
    let reply;
    try {
      reply = await this.call(this.decisionChannel, DecisionService.method.decide, request, this.config.deadlineMs,
        options.signal);
    } catch (error) {
      if (error instanceof LoopwiseError && error.unreachable) return this.localDecision(useCase, error);
      throw error;
    }
    await this.remember(useCase, options.signal);
    return decisionFromMessage(reply.decision, this.learned.get(useCase)?.actions ?? []);
  }

  /** Reads the latest version of a use case and caches its default decision for the
   * local fallback. */
  getUseCase(useCase: string, options: CallOptions = {}): Promise<UseCase> {
    return this.readUseCase(useCase, this.bulkDeadlineMs, options.signal);
  }

  private async readUseCase(useCase: string, timeoutMs: number, signal?: AbortSignal): Promise<UseCase> {
    const reply = await this.call(this.decisionChannel, DecisionService.method.getUseCase,
      create(GetUseCaseRequestSchema, { useCase }), timeoutMs, signal);
    if (reply.useCase) this.learn(reply.useCase);
    if (!reply.useCase) throw new Error(`loopwise: GetUseCase answered without a use case for ${useCase}`);
    return reply.useCase;
  }

  /** Logs outcomes (in batches of 5,000) and returns the summed counts. Retrying is
   * safe: an outcome id already stored counts as a duplicate. */
  async logOutcomes(outcomes: readonly Outcome[], options: CallOptions = {}): Promise<LogResult> {
    const total: LogResult = { accepted: 0, duplicates: 0, orphans: 0 };
    const messages = outcomes.map((o) => create(OutcomeSchema, {
      useCase: o.useCase, decisionId: o.decisionId, outcomeId: o.outcomeId, name: o.name, value: o.value ?? 1,
      label: o.label ?? "",
      eventTime: o.eventTime === undefined ? undefined
        : timestampFromMs(o.eventTime instanceof Date ? o.eventTime.getTime() : o.eventTime),
    }));
    for (let start = 0; start < messages.length; start += OUTCOME_BATCH) {
      const request = create(LogOutcomesRequestSchema, {
        requestId: newUuid7(), outcomes: messages.slice(start, start + OUTCOME_BATCH),
      });
      const reply = await this.call(this.feedbackChannel, FeedbackService.method.logOutcomes, request,
        this.bulkDeadlineMs, options.signal);
      total.accepted += reply.accepted;
      total.duplicates += reply.duplicates;
      total.orphans += reply.orphans;
    }
    return total;
  }

  /** Logs one outcome. */
  logOutcome(outcome: Outcome, options: CallOptions = {}): Promise<LogResult> {
    return this.logOutcomes([outcome], options);
  }

  /** The default decision the client would answer with locally, if one is known: given
   * in `defaults`, else learned from GetUseCase. */
  defaultFor(useCase: string): UseCaseDefault | undefined {
    const learned = this.learned.get(useCase);
    const given = this.config.defaults.get(useCase);
    if (given !== undefined) {
      const actions = learned?.actions.includes(given) ? [...learned.actions] : [given];
      return { action: given, score: 0, actions, blueprintVersion: 0 };
    }
    return learned && { ...learned, actions: [...learned.actions] };
  }

  /** Closes both channels. */
  close(): void {
    this.decisionChannel.close();
    this.feedbackChannel.close();
  }

  private learn(useCase: UseCase): void {
    const blueprint = useCase.blueprint;
    if (!blueprint?.useCase) return;
    this.learned.set(blueprint.useCase, {
      action: blueprint.defaultDecision?.action ?? "", score: blueprint.defaultDecision?.score ?? 0,
      actions: [...blueprint.actions], blueprintVersion: Number(useCase.version),
    });
  }

  /** Learns the default decision at the first successful contact (best effort, within
   * the decide deadline: a slow answer is learned at a later contact). */
  private async remember(useCase: string, signal?: AbortSignal): Promise<void> {
    if (this.learned.has(useCase)) return;
    try {
      await this.readUseCase(useCase, this.config.deadlineMs, signal);
    } catch {
      // best effort: learned at a later contact
    }
  }

  private localDecision(useCase: string, error: LoopwiseError): Decision {
    const fallback = this.defaultFor(useCase);
    if (!fallback) throw new DecisionUnavailableError(useCase, error);
    const actions = fallback.actions.length ? fallback.actions : [fallback.action];
    const probabilities: Record<string, number> = {};
    for (const action of actions) probabilities[action] = action === fallback.action ? 1 : 0;
    return {
      decisionId: newUuid7(), useCase, action: fallback.action, actionIndex: Math.max(actions.indexOf(fallback.action), 0),
      score: fallback.score, probabilities, actionScores: {}, modelVersion: 0,
      blueprintVersion: fallback.blueprintVersion, arm: "", explored: false, fallback: true,
    };
  }
}
