// A decision and a feedback service in one in-process @grpc/grpc-js server on a
// loopback port, whose answers each test scripts.
import {
  Metadata, Server, ServerCredentials, status as Status,
  type sendUnaryData, type ServerUnaryCall, type ServiceDefinition, type UntypedHandleCall,
} from "@grpc/grpc-js";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import {
  DecideResponseSchema, DecisionService, GetUseCaseResponseSchema, UseCaseSchema,
  type DecideRequest, type DecideResponse, type GetUseCaseRequest,
} from "../../gen/loopwise/decision/v1/decision_service_pb.js";
import { BlueprintSchema, DefaultDecisionSchema } from "../../gen/loopwise/common/v1/blueprint_pb.js";
import {
  FeedbackService, LogOutcomesResponseSchema, type LogOutcomesRequest, type LogOutcomesResponse,
} from "../../gen/loopwise/feedback/v1/feedback_service_pb.js";
import { methodPath, newUuid7, type UnaryMethod } from "../index.js";

/** A refusal: a gRPC status with optional trailers. */
export interface Refusal {
  code: Status;
  details: string;
  metadata?: Metadata;
}

export type Answer<Req, Res> = (n: number, request: Req, call: ServerUnaryCall<Req, Res>) =>
  Promise<Res | Refusal> | Res | Refusal;

function isRefusal(value: unknown): value is Refusal {
  return typeof value === "object" && value !== null && "code" in value && "details" in value;
}

function definition<I extends DescMessage, O extends DescMessage>(method: UnaryMethod<I, O>) {
  return {
    path: methodPath(method), requestStream: false, responseStream: false, originalName: method.name,
    requestSerialize: (value: MessageShape<I>) => Buffer.from(toBinary(method.input, value)),
    requestDeserialize: (bytes: Buffer) => fromBinary(method.input, bytes),
    responseSerialize: (value: MessageShape<O>) => Buffer.from(toBinary(method.output, value)),
    responseDeserialize: (bytes: Buffer) => fromBinary(method.output, bytes),
  };
}

/** The use case the fake knows: actions no/yes, default "no" at 0.25, version 3. */
export function offerUseCase(name = "offer") {
  return create(UseCaseSchema, {
    version: 3n,
    blueprint: create(BlueprintSchema, {
      useCase: name, actions: ["no", "yes"], defaultDecision: create(DefaultDecisionSchema, { action: "no", score: 0.25 }),
    }),
  });
}

export function served(useCase: string): DecideResponse {
  return create(DecideResponseSchema, {
    decision: {
      decisionId: newUuid7(), useCase, action: "yes", actionIndex: 1, score: 0.7, actionProbabilities: [0.2, 0.8],
      modelVersion: 4n, blueprintVersion: 3n, arm: "default",
    },
  });
}

export function unavailable(): Refusal {
  return { code: Status.UNAVAILABLE, details: "overloaded link" };
}

/** RESOURCE_EXHAUSTED with a grpc-retry-pushback-ms trailer. */
export function shed(ms: string): Refusal {
  const metadata = new Metadata();
  metadata.set("grpc-retry-pushback-ms", ms);
  return { code: Status.RESOURCE_EXHAUSTED, details: `shedding load; retry in ${ms} ms`, metadata };
}

/** A google.rpc.Status with one detail, as the grpc-status-details-bin trailer. */
export function statusDetails(code: Status, message: string, typeUrl: string, detail: Uint8Array): Metadata {
  const any = new BinaryWriter().tag(1, 2).string(typeUrl).tag(2, 2).bytes(detail).finish();
  const status = new BinaryWriter().tag(1, 0).int32(code).tag(2, 2).string(message).tag(3, 2).bytes(any).finish();
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(status));
  return metadata;
}

/** A google.rpc.RetryInfo detail asking to wait `ms`. */
export function retryInfo(ms: number): Uint8Array {
  const duration = new BinaryWriter().tag(1, 0).int64(Math.floor(ms / 1000)).tag(2, 0).int32((ms % 1000) * 1e6).finish();
  return new BinaryWriter().tag(1, 2).bytes(duration).finish();
}

/** A google.rpc.BadRequest with one field violation. */
export function badRequest(field: string, description: string): Uint8Array {
  const violation = new BinaryWriter().tag(1, 2).string(field).tag(2, 2).string(description).finish();
  return new BinaryWriter().tag(1, 2).bytes(violation).finish();
}

export class Fake {
  readonly server = new Server();
  address = "";
  decide: Answer<DecideRequest, DecideResponse> | undefined;
  logOutcomes: Answer<LogOutcomesRequest, LogOutcomesResponse> | undefined;
  readonly decideRequests: DecideRequest[] = [];
  readonly decideTimes: number[] = [];
  readonly outcomeRequests: LogOutcomesRequest[] = [];
  getUseCases = 0;
  readonly authorization: string[] = [];

  private note(call: ServerUnaryCall<unknown, unknown>): void {
    for (const value of call.metadata.get("authorization")) this.authorization.push(String(value));
  }

  private handler<Req, Res>(answer: () => Answer<Req, Res> | undefined, fallback: Answer<Req, Res>,
                            record: (request: Req) => number) {
    return async (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      this.note(call as ServerUnaryCall<unknown, unknown>);
      const n = record(call.request);
      try {
        const result = await (answer() ?? fallback)(n, call.request, call);
        if (isRefusal(result)) callback({ code: result.code, details: result.details, metadata: result.metadata }, null);
        else callback(null, result);
      } catch (error) {
        callback({ code: Status.INTERNAL, details: String(error) }, null);
      }
    };
  }

  async start(): Promise<this> {
    const decisionService: ServiceDefinition = {
      Decide: definition(DecisionService.method.decide),
      GetUseCase: definition(DecisionService.method.getUseCase),
    };
    const feedbackService: ServiceDefinition = { LogOutcomes: definition(FeedbackService.method.logOutcomes) };
    this.server.addService(decisionService, {
      Decide: this.handler<DecideRequest, DecideResponse>(() => this.decide, (_n, r) => served(r.useCase), (r) => {
        this.decideTimes.push(performance.now());
        return this.decideRequests.push(r) - 1;
      }),
      GetUseCase: this.handler<GetUseCaseRequest, ReturnType<typeof useCaseReply>>(() => undefined,
        (_n, r) => useCaseReply(r.useCase), () => this.getUseCases++),
    } as Record<string, UntypedHandleCall>);
    this.server.addService(feedbackService, {
      LogOutcomes: this.handler<LogOutcomesRequest, LogOutcomesResponse>(() => this.logOutcomes,
        (_n, r) => create(LogOutcomesResponseSchema, { accepted: r.outcomes.length }),
        (r) => this.outcomeRequests.push(r) - 1),
    } as Record<string, UntypedHandleCall>);
    const port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(),
        (error, bound) => (error ? reject(error) : resolve(bound)));
    });
    this.address = `127.0.0.1:${port}`;
    return this;
  }

  /** The times (ms) between consecutive Decide calls. */
  gaps(): number[] {
    return this.decideTimes.slice(1).map((t, i) => t - this.decideTimes[i]!);
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

function useCaseReply(useCase: string) {
  return create(GetUseCaseResponseSchema, { useCase: offerUseCase(useCase) });
}
