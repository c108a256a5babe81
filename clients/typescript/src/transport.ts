// The two ways to the service: one JSON-RPC call per HTTP POST, and a WebSocket connection that
// carries many calls and the notifications of subscriptions.

import { OpportunityClientError, RpcError, TransportError } from './errors.js';
import type { SubscriptionId } from './generated.js';

/** The `message` event of a WebSocket, as the client reads it. */
export interface WsMessageEventLike {
  readonly data: unknown;
}

/** The `close` event of a WebSocket, as the client reads it. */
export interface WsCloseEventLike {
  readonly code: number;
  readonly reason: string;
}

/**
 * What the client needs of a WebSocket: the browser's `WebSocket`, Node's own (Node 22 and
 * later) and the `ws` package's all have it.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open', listener: () => void): void;
  addEventListener(type: 'error', listener: (event: unknown) => void): void;
  addEventListener(type: 'message', listener: (event: WsMessageEventLike) => void): void;
  addEventListener(type: 'close', listener: (event: WsCloseEventLike) => void): void;
}

/** A WebSocket class: `new WebSocket(url)`. */
export type WebSocketConstructorLike = new (url: string) => WebSocketLike;

/** What the client needs of `fetch` (the global one fits). */
export type FetchLike = (
  input: string,
  init: { method: 'POST'; headers: Record<string, string>; body: string; signal: AbortSignal },
) => Promise<{ readonly status: number; text(): Promise<string> }>;

const OPEN = 1;

function isRecord(value: unknown): value is Readonly<Record<string, unknown>> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
    return `${error.message}${cause}`;
  }
  return String(error);
}

/** The result of a JSON-RPC answer, or its error thrown as an RpcError. */
function settle(answer: unknown, method: string, where: string): unknown {
  if (isRecord(answer) && 'error' in answer) throw RpcError.from(answer['error'], method);
  if (isRecord(answer) && 'result' in answer) return answer['result'];
  throw new TransportError(`${where}: the answer to ${method} is not a JSON-RPC answer`, { retryable: false });
}

/** What an HTTP call needs besides the call itself. */
export interface HttpTarget {
  readonly url: string;
  readonly fetch: FetchLike;
  readonly headers: Record<string, string>;
  readonly timeoutMs: number;
}

/** One JSON-RPC call over HTTP: `POST url` with the request as its body. */
export async function httpCall(target: HttpTarget, id: number, method: string, params: unknown): Promise<unknown> {
  const body = JSON.stringify({ jsonrpc: '2.0', id, method, params });
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json', ...target.headers };
  let status: number;
  let text: string;
  try {
    const response = await target.fetch(target.url, {
      method: 'POST',
      headers,
      body,
      signal: AbortSignal.timeout(target.timeoutMs),
    });
    status = response.status;
    text = await response.text();
  } catch (error) {
    throw new TransportError(`HTTP call of ${method} failed: ${describe(error)}`, { retryable: true, cause: error });
  }
  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch (error) {
    const retryable = status >= 500 || status === 408 || status === 429;
    throw new TransportError(`HTTP ${status} for ${method}: the answer is not JSON`, {
      retryable,
      status,
      cause: error,
    });
  }
  return settle(answer, method, `HTTP ${status}`);
}

/** Where the notifications of one subscription go. */
export interface SubscriptionSink {
  /** An `opportunity.changed` notification's `result`: one event. */
  onEvent(event: unknown): void;
  /** The subscription ended: the service's final error, or the connection was lost. */
  onEnd(error: OpportunityClientError): void;
}

interface Pending {
  readonly method: string;
  readonly resolve: (result: unknown) => void;
  readonly reject: (error: OpportunityClientError) => void;
  readonly timer: ReturnType<typeof setTimeout>;
  /** Runs as soon as the result is read, before any later message: a subscription's sink. */
  readonly onResult: ((result: unknown) => void) | undefined;
}

function subscriptionKey(id: SubscriptionId): string {
  return `${typeof id}:${id}`;
}

/** One WebSocket connection: calls matched to answers by id, notifications to subscriptions. */
export class WsConnection {
  private readonly socket: WebSocketLike;
  private readonly where: string;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly sinks = new Map<string, SubscriptionSink>();
  private readonly closeListeners = new Set<(error: TransportError) => void>();
  private closeError: TransportError | undefined;

  private constructor(socket: WebSocketLike, where: string) {
    this.socket = socket;
    this.where = where;
    socket.addEventListener('message', (event) => this.onMessage(event.data));
    socket.addEventListener('close', (event) => {
      const reason = event.reason ? `: ${event.reason}` : '';
      this.onClosed(
        new TransportError(`the WebSocket to ${where} closed (code ${event.code}${reason})`, { retryable: true }),
      );
    });
  }

  /**
   * Opens a connection to `url` (which may carry the token as `access_token`; `where` names the
   * service in messages without it).
   */
  static open(
    url: string,
    where: string,
    WebSocketClass: WebSocketConstructorLike,
    timeoutMs: number,
  ): Promise<WsConnection> {
    return new Promise((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new WebSocketClass(url);
      } catch (error) {
        reject(
          new TransportError(`cannot open a WebSocket to ${where}: ${describe(error)}`, {
            retryable: false,
            cause: error,
          }),
        );
        return;
      }
      let settled = false;
      let problem = '';
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        socket.close();
        reject(
          new TransportError(`the WebSocket to ${where} did not open within ${timeoutMs} ms`, { retryable: true }),
        );
      }, timeoutMs);
      socket.addEventListener('error', (event) => {
        // The ws package says why ("Unexpected server response: 401"); browsers do not.
        if (isRecord(event) && typeof event['message'] === 'string') problem = event['message'];
      });
      socket.addEventListener('close', (event) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const status = /\b([1-5]\d\d)\b/.exec(problem)?.[1];
        const code = status === undefined ? undefined : Number(status);
        // A refused handshake (401: no valid token, 403: an Origin that is not allowed) stays refused.
        const retryable = code === undefined || code >= 500 || code === 408 || code === 429;
        const detail = problem ? `: ${problem}` : ` (code ${event.code})`;
        reject(
          new TransportError(`the WebSocket to ${where} did not open${detail}`, {
            retryable,
            ...(code === undefined ? {} : { status: code }),
          }),
        );
      });
      socket.addEventListener('open', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(new WsConnection(socket, where));
      });
    });
  }

  /** Whether calls can be sent. */
  get isOpen(): boolean {
    return this.closeError === undefined && this.socket.readyState === OPEN;
  }

  /** Runs `listener` once, when the connection closes (at once if it is closed). */
  onClose(listener: (error: TransportError) => void): void {
    if (this.closeError) listener(this.closeError);
    else this.closeListeners.add(listener);
  }

  /** One call; `onResult` runs with the result before any later message is read. */
  call(method: string, params: unknown, timeoutMs: number, onResult?: (result: unknown) => void): Promise<unknown> {
    if (this.closeError) return Promise.reject(this.closeError);
    if (this.socket.readyState !== OPEN) {
      return Promise.reject(new TransportError(`the WebSocket to ${this.where} is not open`, { retryable: true }));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new TransportError(`no answer to ${method} within ${timeoutMs} ms`, { retryable: true }));
      }, timeoutMs);
      this.pending.set(id, { method, resolve, reject, timer, onResult });
      try {
        this.socket.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
      } catch (error) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new TransportError(`cannot send ${method}: ${describe(error)}`, { retryable: true, cause: error }));
      }
    });
  }

  /**
   * Calls `method` (a subscribe) and routes the notifications of the subscription it answers to
   * `sink`, from the first one on.
   */
  async subscribe(method: string, params: unknown, sink: SubscriptionSink, timeoutMs: number): Promise<SubscriptionId> {
    let id: SubscriptionId | undefined;
    await this.call(method, params, timeoutMs, (result) => {
      if (typeof result !== 'number' && typeof result !== 'string') return;
      id = result;
      this.sinks.set(subscriptionKey(result), sink);
    });
    if (id === undefined) throw new TransportError(`${method} answered no subscription id`, { retryable: false });
    return id;
  }

  /** Stops routing a subscription's notifications (what is still sent for it is dropped). */
  forget(id: SubscriptionId): void {
    this.sinks.delete(subscriptionKey(id));
  }

  /** Closes the connection; its calls fail and its subscriptions end with a TransportError. */
  close(): void {
    this.onClosed(new TransportError(`the WebSocket to ${this.where} was closed by the client`, { retryable: true }));
    try {
      this.socket.close(1000, 'client closed');
    } catch {
      // already closing
    }
  }

  private onMessage(data: unknown): void {
    if (typeof data !== 'string') return;
    let message: unknown;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    for (const item of Array.isArray(message) ? message : [message]) {
      if (!isRecord(item)) continue;
      if (typeof item['method'] === 'string') {
        this.onNotification(item['params']);
        continue;
      }
      const id = item['id'];
      const pending = typeof id === 'number' ? this.pending.get(id) : undefined;
      if (pending === undefined || typeof id !== 'number') continue;
      this.pending.delete(id);
      clearTimeout(pending.timer);
      let result: unknown;
      try {
        result = settle(item, pending.method, this.where);
      } catch (error) {
        pending.reject(
          error instanceof OpportunityClientError ? error : new TransportError(describe(error), { retryable: false }),
        );
        continue;
      }
      pending.onResult?.(result);
      pending.resolve(result);
    }
  }

  private onNotification(params: unknown): void {
    if (!isRecord(params)) return;
    const id = params['subscription'];
    if (typeof id !== 'number' && typeof id !== 'string') return;
    const key = subscriptionKey(id);
    const sink = this.sinks.get(key);
    if (sink === undefined) return;
    if ('result' in params) {
      sink.onEvent(params['result']);
    } else if ('error' in params) {
      // The service's last word on this subscription: nothing more comes for it.
      this.sinks.delete(key);
      sink.onEnd(RpcError.from(params['error'], 'opportunity.subscribe'));
    }
  }

  private onClosed(error: TransportError): void {
    if (this.closeError) return;
    this.closeError = error;
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.pending.clear();
    const sinks = [...this.sinks.values()];
    this.sinks.clear();
    for (const sink of sinks) sink.onEnd(error);
    const listeners = [...this.closeListeners];
    this.closeListeners.clear();
    for (const listener of listeners) listener(error);
  }
}
