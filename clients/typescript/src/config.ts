import { readFileSync } from "node:fs";
import { ChannelCredentials, credentials, type ChannelOptions } from "@grpc/grpc-js";
import { ConfigError } from "./errors.js";

/** Where the services listen on one machine (make up). */
export const DEFAULT_DECISION_ADDRESS = "127.0.0.1:50051";
export const DEFAULT_FEEDBACK_ADDRESS = "127.0.0.1:50052";
/** The deadline of one decide call, its retries included. */
export const DEFAULT_DEADLINE_MS = 1000;
/** The most extra attempts after UNAVAILABLE or RESOURCE_EXHAUSTED with retry pushback. */
export const DEFAULT_RETRIES = 2;
/** The least deadline of logOutcomes and getUseCase. */
export const BULK_DEADLINE_MS = 30_000;
/** The services' default LOOPWISE_MAX_MESSAGE_BYTES. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Spreads calls over every address a target resolves to. */
const ROUND_ROBIN = JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] });

/** Where the services are and how to reach them; TLS unless `insecure` is set. */
export interface ClientConfig {
  /** The decision service: host:port, or a gRPC target such as
   * dns:///loopwise-decision-headless.loopwise.svc:50051 (calls go round robin over every
   * address it resolves to). Default 127.0.0.1:50051. */
  decisionAddress?: string;
  /** The feedback service, in the same forms. Default 127.0.0.1:50052. */
  feedbackAddress?: string;
  /** PEM file of the CA that signed the servers' certificates (or `ca`, its contents);
   * neither: the system's roots. */
  caFile?: string;
  ca?: string | Buffer;
  /** Client certificate and key (PEM files, or `cert`/`key` contents) for mutual TLS. */
  certFile?: string;
  keyFile?: string;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The name to verify in the servers' certificates when it differs from the address. */
  serverName?: string;
  /** Plaintext (for services run with LOOPWISE_ALLOW_PLAINTEXT=true on loopback); not
   * combinable with the TLS settings. */
  insecure?: boolean;
  /** Bearer token sent with every call (authorization: Bearer <token>). */
  token?: string;
  /** Deadline of one decide call, its retries included (default 1000 ms); logOutcomes
   * and getUseCase get at least 30 s. */
  deadlineMs?: number;
  /** Most extra attempts after UNAVAILABLE or RESOURCE_EXHAUSTED with retry pushback,
   * within the deadline (default 2; 0: no retry). */
  retries?: number;
  /** Default action per use case for the local fallback; takes precedence over the
   * default learned from GetUseCase. */
  defaults?: Record<string, string>;
  /** Extra @grpc/grpc-js channel options of both channels. */
  channelOptions?: ChannelOptions;
}

/** A configuration with every default filled in and the credentials made. */
export interface ResolvedConfig {
  decisionAddress: string;
  feedbackAddress: string;
  credentials: ChannelCredentials;
  channelOptions: ChannelOptions;
  token: string;
  deadlineMs: number;
  retries: number;
  defaults: Map<string, string>;
}

function read(field: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new ConfigError(field, (error as Error).message);
  }
}

function pem(field: string, contents: string | Buffer | undefined, path: string | undefined): Buffer | undefined {
  if (contents !== undefined && path) throw new ConfigError(field, `give ${field} or ${field}File, not both`);
  if (contents !== undefined) return Buffer.from(contents);
  return path ? read(`${field}File`, path) : undefined;
}

/** Checks a configuration and fills in its defaults. */
export function resolveConfig(config: ClientConfig = {}): ResolvedConfig {
  const deadlineMs = config.deadlineMs ?? DEFAULT_DEADLINE_MS;
  if (!(deadlineMs > 0)) throw new ConfigError("deadlineMs", `must be positive, not ${deadlineMs}`);
  const retries = config.retries ?? DEFAULT_RETRIES;
  if (!Number.isInteger(retries) || retries < 0) throw new ConfigError("retries", `must be a count, not ${retries}`);
  const defaults = new Map<string, string>();
  for (const [useCase, action] of Object.entries(config.defaults ?? {})) {
    if (!action) throw new ConfigError("defaults", `empty default action for use case ${JSON.stringify(useCase)}`);
    defaults.set(useCase, action);
  }
  const ca = pem("ca", config.ca, config.caFile);
  const cert = pem("cert", config.cert, config.certFile);
  const key = pem("key", config.key, config.keyFile);
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError("cert", "a client certificate needs its key and a key its certificate");
  }
  const channelOptions: ChannelOptions = {
    "grpc.service_config": ROUND_ROBIN,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  };
  let channelCredentials: ChannelCredentials;
  if (config.insecure) {
    if (ca || cert || config.serverName) {
      throw new ConfigError("insecure", "plaintext cannot be combined with a CA, a client certificate or a server name");
    }
    channelCredentials = credentials.createInsecure();
  } else {
    channelCredentials = credentials.createSsl(ca ?? null, key ?? null, cert ?? null);
    if (config.serverName) {
      channelOptions["grpc.ssl_target_name_override"] = config.serverName;
      channelOptions["grpc.default_authority"] = config.serverName;
    }
  }
  return {
    decisionAddress: config.decisionAddress || DEFAULT_DECISION_ADDRESS,
    feedbackAddress: config.feedbackAddress || DEFAULT_FEEDBACK_ADDRESS,
    credentials: channelCredentials,
    channelOptions: { ...channelOptions, ...config.channelOptions },
    token: config.token ?? "",
    deadlineMs,
    retries,
    defaults,
  };
}

/**
 * A configuration from the LOOPWISE_* variables the Python SDK and the CLI read:
 * LOOPWISE_DECISION_ADDRESS, LOOPWISE_FEEDBACK_ADDRESS, LOOPWISE_TLS_CA_FILE,
 * LOOPWISE_TLS_CLIENT_CERT_FILE and LOOPWISE_TLS_CLIENT_KEY_FILE (else
 * LOOPWISE_TLS_CERT_FILE and LOOPWISE_TLS_KEY_FILE), LOOPWISE_TLS_SERVER_NAME,
 * LOOPWISE_TOKEN, LOOPWISE_CLIENT_DEADLINE_S, LOOPWISE_CLIENT_RETRIES and
 * LOOPWISE_ALLOW_PLAINTEXT (plaintext only when it is true and no CA file is set).
 */
export function configFromEnv(env: Record<string, string | undefined> = process.env): ClientConfig {
  const get = (name: string): string | undefined => env[name]?.trim() || undefined;
  const config: ClientConfig = {
    decisionAddress: get("LOOPWISE_DECISION_ADDRESS"),
    feedbackAddress: get("LOOPWISE_FEEDBACK_ADDRESS"),
    caFile: get("LOOPWISE_TLS_CA_FILE"),
    certFile: get("LOOPWISE_TLS_CLIENT_CERT_FILE") ?? get("LOOPWISE_TLS_CERT_FILE"),
    keyFile: get("LOOPWISE_TLS_CLIENT_KEY_FILE") ?? get("LOOPWISE_TLS_KEY_FILE"),
    serverName: get("LOOPWISE_TLS_SERVER_NAME"),
    token: get("LOOPWISE_TOKEN"),
  };
  const plaintext = get("LOOPWISE_ALLOW_PLAINTEXT");
  if (plaintext !== undefined) {
    const allowed = ["1", "true", "yes", "on"].includes(plaintext.toLowerCase());
    if (!allowed && !["0", "false", "no", "off"].includes(plaintext.toLowerCase())) {
      throw new ConfigError("LOOPWISE_ALLOW_PLAINTEXT", `not a boolean: ${JSON.stringify(plaintext)}`);
    }
    if (allowed && config.caFile === undefined) {
      config.insecure = true;
      config.certFile = undefined;
      config.keyFile = undefined;
      config.serverName = undefined;
    }
  }
  const deadline = get("LOOPWISE_CLIENT_DEADLINE_S");
  if (deadline !== undefined) {
    const seconds = Number(deadline);
    if (!(seconds > 0)) throw new ConfigError("LOOPWISE_CLIENT_DEADLINE_S", `not a positive number: ${deadline}`);
    config.deadlineMs = seconds * 1000;
  }
  const retries = get("LOOPWISE_CLIENT_RETRIES");
  if (retries !== undefined) {
    const count = Number(retries);
    if (!Number.isInteger(count) || count < 0) throw new ConfigError("LOOPWISE_CLIENT_RETRIES", `not a count: ${retries}`);
    config.retries = count;
  }
  for (const key of Object.keys(config) as Array<keyof ClientConfig>) {
    if (config[key] === undefined) delete config[key];
  }
  return config;
}
