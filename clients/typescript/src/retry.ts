import { Metadata, status as Status } from "@grpc/grpc-js";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { FieldViolation } from "./errors.js";

/** The trailer in which a server shedding load says how long to wait before retrying, in
 * milliseconds (gRPC's retry design); a negative or unreadable value asks for no retry. */
export const PUSHBACK_KEY = "grpc-retry-pushback-ms";
/** The trailer carrying the google.rpc.Status with its details. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
/** The wait before the first retry without pushback: attempt n waits a random time in
 * [base * 2^n / 2, base * 2^n]; with pushback p, in [p, 1.5 p]. */
export const BACKOFF_MS = 50;

const RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo";
const BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest";

/** The details (type URL, bytes) of the google.rpc.Status in the trailers. */
function statusDetails(metadata: Metadata | undefined): Array<[string, Uint8Array]> {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (!(raw instanceof Uint8Array)) return [];
  const details: Array<[string, Uint8Array]> = [];
  try {
    const status = new BinaryReader(raw);
    while (status.pos < status.len) {
      const [field, wire] = status.tag();
      if (field !== 3 || wire !== WireType.LengthDelimited) {
        status.skip(wire, field);
        continue;
      }
      const any = new BinaryReader(status.bytes());
      let typeUrl = "";
      let value: Uint8Array = new Uint8Array();
      while (any.pos < any.len) {
        const [f, w] = any.tag();
        if (f === 1 && w === WireType.LengthDelimited) typeUrl = any.string();
        else if (f === 2 && w === WireType.LengthDelimited) value = any.bytes();
        else any.skip(w, f);
      }
      details.push([typeUrl, value]);
    }
  } catch {
    return details; // a damaged status: what could be read
  }
  return details;
}

/** Milliseconds of a google.protobuf.Duration message. */
function durationMs(bytes: Uint8Array): number {
  const reader = new BinaryReader(bytes);
  let seconds = 0;
  let nanos = 0;
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 1 && wire === WireType.Varint) seconds = Number(reader.int64());
    else if (field === 2 && wire === WireType.Varint) nanos = reader.int32();
    else reader.skip(wire, field);
  }
  return seconds * 1000 + nanos / 1e6;
}

/** The retry pushback a server attached to a failed call, in milliseconds: the
 * grpc-retry-pushback-ms trailer, else the status's google.rpc.RetryInfo; undefined when
 * there is neither; negative when the server asked for no retry. */
export function pushbackOf(metadata: Metadata | undefined): number | undefined {
  const values = metadata?.get(PUSHBACK_KEY) ?? [];
  if (values.length > 0) {
    const text = String(values[0]).trim();
    const ms = /^-?\d+$/.test(text) ? Number(text) : NaN;
    return Number.isNaN(ms) || ms < 0 ? -1 : ms;
  }
  for (const [typeUrl, value] of statusDetails(metadata)) {
    if (typeUrl !== RETRY_INFO) continue;
    try {
      const info = new BinaryReader(value);
      while (info.pos < info.len) {
        const [field, wire] = info.tag();
        if (field === 1 && wire === WireType.LengthDelimited) return Math.max(0, durationMs(info.bytes()));
        info.skip(wire, field);
      }
      return 0;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** The field violations of a google.rpc.BadRequest detail in the trailers. */
export function violationsOf(metadata: Metadata | undefined): FieldViolation[] {
  const out: FieldViolation[] = [];
  for (const [typeUrl, value] of statusDetails(metadata)) {
    if (typeUrl !== BAD_REQUEST) continue;
    try {
      const request = new BinaryReader(value);
      while (request.pos < request.len) {
        const [field, wire] = request.tag();
        if (field !== 1 || wire !== WireType.LengthDelimited) {
          request.skip(wire, field);
          continue;
        }
        const violation = new BinaryReader(request.bytes());
        const item: FieldViolation = { field: "", description: "" };
        while (violation.pos < violation.len) {
          const [f, w] = violation.tag();
          if (f === 1 && w === WireType.LengthDelimited) item.field = violation.string();
          else if (f === 2 && w === WireType.LengthDelimited) item.description = violation.string();
          else violation.skip(w, f);
        }
        out.push(item);
      }
    } catch {
      // a damaged detail: the violations read so far
    }
  }
  return out;
}

/**
 * The wait (ms) before retrying a failed attempt, or undefined: no retry.
 *
 * Retried: UNAVAILABLE, and RESOURCE_EXHAUSTED that carries retry pushback (without
 * pushback it is a size or quota limit, final), at most `retries` times (`attempt`
 * counts from 0). The wait is at least the server's pushback (up to 1.5 times it, at
 * random, so that refused callers do not come back together), or exponential backoff
 * with jitter without one. No retry when the server asked for none, or when the wait
 * would leave no time (`leftMs`) for another attempt. `random` gives numbers in [0, 1).
 */
export function retryDelayMs(code: number, pushbackMs: number | undefined, attempt: number, retries: number,
                             leftMs: number, random: () => number = Math.random): number | undefined {
  if (attempt >= retries) return undefined;
  if (code !== Status.UNAVAILABLE && code !== Status.RESOURCE_EXHAUSTED) return undefined;
  if (pushbackMs !== undefined && pushbackMs < 0) return undefined;
  let delay: number;
  if (pushbackMs === undefined) {
    if (code === Status.RESOURCE_EXHAUSTED) return undefined;
    const ceiling = BACKOFF_MS * 2 ** Math.min(attempt, 30);
    delay = ceiling / 2 + random() * ceiling / 2;
  } else {
    delay = pushbackMs * (1 + 0.5 * random());
  }
  return delay < leftMs ? delay : undefined;
}
