import { Metadata, status as Status } from "@grpc/grpc-js";

/** One bad field of a request, as the server named it (google.rpc.BadRequest). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** The name of a gRPC status code, e.g. "INVALID_ARGUMENT". */
export function codeName(code: number): string {
  return (Status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

/** A failed call: the gRPC status of its last attempt and how many attempts were made. */
export class LoopwiseError extends Error {
  /** The RPC, e.g. "Decide". */
  readonly method: string;
  /** The gRPC status code (`status` of @grpc/grpc-js) and the server's message. */
  readonly code: Status;
  readonly details: string;
  /** How many times the call was made (1 + retries). */
  readonly attempts: number;
  /** The wait (ms) the server asked for before a retry, if it asked; negative: no retry. */
  readonly pushbackMs: number | undefined;
  /** Field violations of a google.rpc.BadRequest detail (bad input). */
  readonly violations: FieldViolation[];
  /** The trailing metadata of the last attempt. */
  readonly metadata: Metadata;

  constructor(method: string, code: Status, details: string, attempts: number, pushbackMs: number | undefined,
              violations: FieldViolation[], metadata: Metadata) {
    super(`loopwise: ${method}: ${codeName(code)}: ${details}${attempts > 1 ? ` (after ${attempts} attempts)` : ""}`);
    this.name = "LoopwiseError";
    this.method = method;
    this.code = code;
    this.details = details;
    this.attempts = attempts;
    this.pushbackMs = pushbackMs;
    this.violations = violations;
    this.metadata = metadata;
  }

  /** The status code's name, e.g. "UNAVAILABLE". */
  get codeName(): string {
    return codeName(this.code);
  }

  /** The call failed on a transient condition (UNAVAILABLE, or RESOURCE_EXHAUSTED with
   * retry pushback that did not ask for no retry): the same call may succeed later. */
  get retryable(): boolean {
    if (this.code === Status.UNAVAILABLE) return true;
    return this.code === Status.RESOURCE_EXHAUSTED && this.pushbackMs !== undefined && this.pushbackMs >= 0;
  }

  /** The decision service cannot answer now (unreachable, past the deadline, or shedding
   * load): Decide answers with the default decision. */
  get unreachable(): boolean {
    return this.code === Status.UNAVAILABLE || this.code === Status.DEADLINE_EXCEEDED
      || (this.code === Status.RESOURCE_EXHAUSTED && this.pushbackMs !== undefined);
  }
}

/** Thrown by decide when the decision service cannot be reached and no default decision
 * is known for the use case (none learned, none given in `defaults`). */
export class DecisionUnavailableError extends Error {
  readonly useCase: string;
  /** The failed call. */
  override readonly cause: LoopwiseError;

  constructor(useCase: string, cause: LoopwiseError) {
    super(`loopwise: decision service unreachable (${cause.codeName}) and no default decision known `
      + `for use case ${JSON.stringify(useCase)}`);
    this.name = "DecisionUnavailableError";
    this.useCase = useCase;
    this.cause = cause;
  }

  /** The status code of the failed call. */
  get code(): Status {
    return this.cause.code;
  }
}

/** A configuration that cannot be used, or a LOOPWISE_* variable that cannot be read. */
export class ConfigError extends Error {
  readonly field: string;

  constructor(field: string, reason: string) {
    super(`loopwise: config ${field}: ${reason}`);
    this.name = "ConfigError";
    this.field = field;
  }
}

/** A feature value decide cannot send (not a number, a string, a boolean or null). */
export class FeatureError extends TypeError {
  readonly feature: string;

  constructor(feature: string, value: unknown) {
    super(`loopwise: feature ${JSON.stringify(feature)}: value of type ${typeof value}: expected a number, `
      + "a string, a boolean, null or undefined");
    this.name = "FeatureError";
    this.feature = feature;
  }
}
