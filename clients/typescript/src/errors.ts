// The errors the client throws: the service's JSON-RPC errors (RpcError), and the failures of
// the way there (TransportError) or of a subscription that could not be resumed.

import type { ErrorData, EventId } from './generated.js';

/** The base of every error this client throws. */
export class OpportunityClientError extends Error {
  /** Whether the same call may succeed if sent again (the client's retries rely on it). */
  readonly retryable: boolean;

  constructor(message: string, retryable: boolean, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.retryable = retryable;
  }
}

/**
 * `data` of a JSON-RPC error as it came: the members the description lists (`ErrorData`), each
 * possibly absent, and whatever else the service sent (`currentVersion`, `resumeFrom`, …).
 */
export type RpcErrorData = Partial<ErrorData> & { readonly [member: string]: unknown };

/** The `data.code` values of the description. */
export type RpcErrorDataCode = ErrorData['code'];

/** The `data.reason` values documented in docs/api.md. */
export type KnownReason =
  | 'idempotency_key_reused'
  | 'version_mismatch'
  | 'archived'
  | 'events_expired'
  | 'slow_consumer'
  | 'too_many_subscriptions'
  | 'too_many_connections'
  | 'responses_pending';

/** The JSON-RPC error codes of the service (`error.code`). */
export const ErrorCodes = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  PAYLOAD_TOO_LARGE: -32013,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  UNAUTHORIZED: -32001,
  FORBIDDEN: -32003,
  NOT_FOUND: -32004,
  CONFLICT: -32009,
  INTERNAL: -32603,
} as const;

function isRecord(value: unknown): value is Readonly<Record<string, unknown>> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringList(value: unknown): readonly string[] {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}

/**
 * A JSON-RPC error answered by the service. Switch on `code`, then on `dataCode` and `reason`;
 * `message` is for people.
 */
export class RpcError extends OpportunityClientError {
  /** `error.code`: -32602 invalid params, -32009 conflict, … (see `ErrorCodes`). */
  readonly code: number;
  /** `error.data`, as sent (an empty object when the service sent none). */
  readonly data: RpcErrorData;
  /** The method that was called, when the error answers a call. */
  readonly method: string | undefined;

  constructor(code: number, message: string, data: unknown, method?: string) {
    const record: RpcErrorData = isRecord(data) ? data : {};
    super(message, record['retryable'] === true);
    this.code = code;
    this.data = record;
    this.method = method;
  }

  /** Builds an RpcError from a JSON-RPC `error` member, whatever its shape. */
  static from(error: unknown, method?: string): RpcError {
    if (!isRecord(error)) return new RpcError(ErrorCodes.INTERNAL, 'malformed JSON-RPC error', undefined, method);
    const code = typeof error['code'] === 'number' ? error['code'] : ErrorCodes.INTERNAL;
    const message = typeof error['message'] === 'string' ? error['message'] : `JSON-RPC error ${code}`;
    return new RpcError(code, message, error['data'], method);
  }

  /** `data.code`: `BAD_REQUEST`, `CONFLICT`, `NOT_FOUND`, … */
  get dataCode(): RpcErrorDataCode | (string & {}) | undefined {
    const value = this.data['code'];
    return typeof value === 'string' ? value : undefined;
  }

  /** `data.httpStatus`: the HTTP status matching the error (informational). */
  get httpStatus(): number | undefined {
    const value = this.data['httpStatus'];
    return typeof value === 'number' ? value : undefined;
  }

  /** `data.fieldErrors`: field name (`title`, `solutionFamilies.2`) → messages; `{}` when none. */
  get fieldErrors(): Readonly<Record<string, readonly string[]>> {
    const value = this.data['fieldErrors'];
    if (!isRecord(value)) return {};
    const out: Record<string, readonly string[]> = {};
    for (const [field, messages] of Object.entries(value)) out[field] = stringList(messages);
    return out;
  }

  /** `data.formErrors`: problems of no single field (unknown fields, rules across fields). */
  get formErrors(): readonly string[] {
    return stringList(this.data['formErrors']);
  }

  /** `data.reason`: `version_mismatch`, `idempotency_key_reused`, `archived`, … */
  get reason(): KnownReason | (string & {}) | undefined {
    const value = this.data['reason'];
    return typeof value === 'string' ? value : undefined;
  }

  /** `data.currentVersion`: the stored version, with `reason: "version_mismatch"`. */
  get currentVersion(): number | undefined {
    const value = this.data['currentVersion'];
    return typeof value === 'number' ? value : undefined;
  }

  /** `data.resumeFrom`: where a subscription the service ended may resume (`since`). */
  get resumeFrom(): EventId | undefined {
    const value = this.data['resumeFrom'];
    return typeof value === 'string' ? value : undefined;
  }

  /** `data.requestId`: the id of the service's log line, on internal errors. */
  get requestId(): string | undefined {
    const value = this.data['requestId'];
    return typeof value === 'string' ? value : undefined;
  }

  /** `data.detail`: a short description, on errors of the JSON-RPC layer itself. */
  get detail(): string | undefined {
    const value = this.data['detail'];
    return typeof value === 'string' ? value : undefined;
  }
}

/**
 * The call did not get an answer from the service: the connection failed or was lost, the
 * answer did not come in time, or what came was no JSON-RPC answer. `retryable` says whether
 * sending the call again makes sense (the client's retries and resumes do so).
 */
export class TransportError extends OpportunityClientError {
  /** The HTTP status, when the failure came with one (an HTTP answer, a refused handshake). */
  readonly status: number | undefined;

  constructor(message: string, options: { retryable: boolean; status?: number; cause?: unknown }) {
    super(message, options.retryable, { cause: options.cause });
    this.status = options.status;
  }
}

/** A subscription ended for good: the reconnect attempts were used up. */
export class SubscriptionLostError extends OpportunityClientError {
  /** The last event delivered before it was lost: resume from it with `since`. */
  readonly lastEventId: EventId | undefined;

  constructor(message: string, lastEventId: EventId | undefined, cause: unknown) {
    super(message, false, { cause });
    this.lastEventId = lastEventId;
  }
}

/** The client (or the subscription) was closed by its owner. */
export class ClosedError extends OpportunityClientError {
  constructor(message = 'the client was closed') {
    super(message, false);
  }
}
