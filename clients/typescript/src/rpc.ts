import { Client as GrpcClient, Metadata, type ServiceError } from "@grpc/grpc-js";
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

/** A unary RPC of a generated service (e.g. `DecisionService.method.decide`). */
export interface UnaryMethod<I extends DescMessage, O extends DescMessage> {
  readonly name: string;
  readonly parent: { readonly typeName: string };
  readonly methodKind: "unary";
  readonly input: I;
  readonly output: O;
}

/** The wire path of a method, /package.Service/Method. */
export function methodPath(method: { name: string; parent: { typeName: string } }): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** A failed attempt: @grpc/grpc-js's error (its metadata are the trailers). */
export function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number"
    && (error as Partial<ServiceError>).metadata instanceof Metadata;
}

/** One attempt of a unary call over a channel, with protobuf-es messages. */
export function callOnce<I extends DescMessage, O extends DescMessage>(
  channel: GrpcClient, method: UnaryMethod<I, O>, request: MessageShape<I>, metadata: Metadata, deadline: Date,
  signal?: AbortSignal,
): Promise<MessageShape<O>> {
  return new Promise((resolve, reject) => {
    const call = channel.makeUnaryRequest<MessageShape<I>, MessageShape<O>>(
      methodPath(method),
      (value) => Buffer.from(toBinary(method.input, value)),
      (bytes) => fromBinary(method.output, bytes),
      request, metadata, { deadline },
      (error, reply) => {
        signal?.removeEventListener("abort", cancel);
        if (error) reject(error);
        else resolve(reply as MessageShape<O>);
      },
    );
    function cancel(): void {
      call.cancel();
    }
    signal?.addEventListener("abort", cancel, { once: true });
  });
}
