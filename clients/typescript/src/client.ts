// OpportunityClient: a typed method per method of the service, over HTTP or WebSocket, with
// retries that keep a write's idempotency key, and subscriptions that resume.

import { ClosedError, ErrorCodes, OpportunityClientError, RpcError } from './errors.js';
import type {
  ChangesPage,
  ChangesParams,
  ChangeStateParams,
  ComponentSchemas,
  CreateOpportunityParams,
  ListOpportunitiesParams,
  OpenRpcDocument,
  Opportunity,
  OpportunityPage,
  OpportunityRef,
  SubscribeParams,
  SubscriptionId,
  UpdateOpportunityParams,
} from './generated.js';
import { type ReconnectOptions, type SubscribeOptions, Subscription, type SubscriptionHost } from './subscription.js';
import { type FetchLike, httpCall, type WebSocketConstructorLike, WsConnection } from './transport.js';

/**
 * Every method of the service with the names of its params and result schemas in
 * openapi/openapi.yaml, as `rpc.discover` names them (the tests compare the two).
 */
export const METHODS = {
  'opportunity.create': { params: 'CreateOpportunityParams', result: 'Opportunity' },
  'opportunity.get': { params: 'OpportunityRef', result: 'Opportunity' },
  'opportunity.list': { params: 'ListOpportunitiesParams', result: 'OpportunityPage' },
  'opportunity.update': { params: 'UpdateOpportunityParams', result: 'Opportunity' },
  'opportunity.archive': { params: 'ChangeStateParams', result: 'Opportunity' },
  'opportunity.restore': { params: 'ChangeStateParams', result: 'Opportunity' },
  'opportunity.changes': { params: 'ChangesParams', result: 'ChangesPage' },
  'opportunity.subscribe': { params: 'SubscribeParams', result: 'SubscriptionId' },
  'opportunity.unsubscribe': { params: 'UnsubscribeParams', result: 'Unsubscribed' },
} as const satisfies Record<string, { params: keyof ComponentSchemas; result: keyof ComponentSchemas }>;

/** A method of the service. */
export type MethodName = keyof typeof METHODS;
/** The params of a method, as generated from openapi/openapi.yaml. */
export type ParamsOf<M extends MethodName> = ComponentSchemas[(typeof METHODS)[M]['params']];
/** The result of a method, as generated from openapi/openapi.yaml. */
export type ResultOf<M extends MethodName> = ComponentSchemas[(typeof METHODS)[M]['result']];

/** The methods that change something, and so carry an idempotency key. */
const WRITES: ReadonlySet<MethodName> = new Set([
  'opportunity.create',
  'opportunity.update',
  'opportunity.archive',
  'opportunity.restore',
]);

/** A bearer token, or a function that gives the current one (called for every call and connection). */
export type TokenSource = string | (() => string | Promise<string>);

/** How a call is retried. */
export interface RetryOptions {
  /** Attempts in all, the first included (default 3; 1 turns retries off). */
  readonly attempts?: number;
  /** Wait before the second attempt, doubled for each next one (default 100 ms). */
  readonly initialDelayMs?: number;
  /** The longest wait between attempts (default 2,000 ms). */
  readonly maxDelayMs?: number;
}

/** Options of `new OpportunityClient(…)`. */
export interface ClientOptions {
  /**
   * The service: `http://host:port/` or `ws://host:port/` (https, wss). HTTP and WebSocket are
   * served on the same port and path; the scheme only picks the default `transport`.
   */
  readonly url: string;
  /** The bearer token (`Authorization: Bearer …` over HTTP, `access_token` on a WebSocket). */
  readonly token: TokenSource;
  /** The workspace of every call that names none in its params (for tokens of several workspaces). */
  readonly workspaceId?: string;
  /** How calls travel: `http` (one POST each) or `websocket` (one connection); from the URL by default. */
  readonly transport?: 'http' | 'websocket';
  /** How long a call (or the opening of a WebSocket) may take (default 30,000 ms). */
  readonly timeoutMs?: number;
  /** Retries of calls that failed in a way that may pass (default: 3 attempts). */
  readonly retry?: RetryOptions;
  /** How subscriptions reconnect after a lost connection. */
  readonly reconnect?: ReconnectOptions;
  /** The `fetch` to use (default: the global one). */
  readonly fetch?: FetchLike;
  /** The WebSocket class to use (default: the global one, else the `ws` package on Node). */
  readonly WebSocket?: WebSocketConstructorLike;
}

/** Options of one call. */
export interface CallOptions {
  /**
   * The idempotency key of a create, update, archive or restore (also accepted in the params as
   * `idempotencyKey`). Default: a new random UUID for each call of a method, kept by its retries.
   */
  readonly idempotencyKey?: string;
}

/** A new idempotency key: a random UUID (v4). */
export function newIdempotencyKey(): string {
  const crypto = globalThis.crypto;
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  // Pages served over plain HTTP from another host have no randomUUID.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function endpoints(url: string): { http: string; ws: string; where: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`not a URL: ${JSON.stringify(url)}`);
  }
  const secure = parsed.protocol === 'https:' || parsed.protocol === 'wss:';
  if (!secure && parsed.protocol !== 'http:' && parsed.protocol !== 'ws:') {
    throw new TypeError(`the service URL must be http(s):// or ws(s)://, not ${parsed.protocol}//`);
  }
  parsed.hash = '';
  parsed.searchParams.delete('access_token');
  const where = parsed.host;
  parsed.protocol = secure ? 'https:' : 'http:';
  const http = parsed.toString();
  parsed.protocol = secure ? 'wss:' : 'ws:';
  return { http, ws: parsed.toString(), where };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A client of opportunity-service. Over HTTP every call is one POST; over WebSocket the calls
 * share one connection, opened on first use and again after it was lost. Subscriptions always
 * go over a WebSocket (the one of the calls, when `transport` is `websocket`).
 */
export class OpportunityClient {
  /** The HTTP endpoint (`http://host:port/`). */
  readonly httpUrl: string;
  /** The WebSocket endpoint, without the token (`ws://host:port/`). */
  readonly wsUrl: string;
  /** How calls travel. */
  readonly transport: 'http' | 'websocket';

  private readonly where: string;
  private readonly token: TokenSource;
  private readonly workspaceId: string | undefined;
  private readonly timeoutMs: number;
  private readonly retry: Required<RetryOptions>;
  private readonly reconnect: Required<ReconnectOptions>;
  private readonly fetchImpl: FetchLike | undefined;
  private readonly webSocketClass: WebSocketConstructorLike | undefined;
  private readonly subscriptions = new Set<Subscription>();
  private connection: WsConnection | undefined;
  private connecting: Promise<WsConnection> | undefined;
  private nextId = 1;
  private closed = false;

  constructor(options: ClientOptions) {
    const urls = endpoints(options.url);
    this.httpUrl = urls.http;
    this.wsUrl = urls.ws;
    this.where = urls.where;
    this.transport = options.transport ?? (/^wss?:/i.test(options.url) ? 'websocket' : 'http');
    this.token = options.token;
    this.workspaceId = options.workspaceId;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.retry = { attempts: 3, initialDelayMs: 100, maxDelayMs: 2_000, ...options.retry };
    this.reconnect = { attempts: 8, initialDelayMs: 200, maxDelayMs: 5_000, ...options.reconnect };
    this.fetchImpl = options.fetch;
    this.webSocketClass = options.WebSocket;
  }

  /** `opportunity.create`: a new opportunity in the workspace; answered once stored. */
  create(params: CreateOpportunityParams, options?: CallOptions): Promise<Opportunity> {
    return this.call('opportunity.create', params, options);
  }

  /** `opportunity.get`: one opportunity by id, archived or not. */
  get(ref: string | OpportunityRef): Promise<Opportunity> {
    return this.call('opportunity.get', typeof ref === 'string' ? { id: ref } : ref);
  }

  /** `opportunity.list`: one page; pass `nextCursor` back as `cursor` for the next. */
  list(params: ListOpportunitiesParams = {}): Promise<OpportunityPage> {
    return this.call('opportunity.list', params);
  }

  /** Every opportunity `opportunity.list` finds, page after page. */
  async *listAll(params: Omit<ListOpportunitiesParams, 'cursor'> = {}): AsyncGenerator<Opportunity, void, undefined> {
    let cursor: string | null = null;
    do {
      const page: OpportunityPage = await this.list(cursor === null ? params : { ...params, cursor });
      yield* page.items;
      cursor = page.nextCursor;
    } while (cursor !== null);
  }

  /**
   * `opportunity.update`: the named fields at `expectedVersion` (absent: unchanged; `null`:
   * cleared). A stale version is an RpcError with `reason` `version_mismatch` and `currentVersion`.
   */
  update(params: UpdateOpportunityParams, options?: CallOptions): Promise<Opportunity> {
    return this.call('opportunity.update', params, options);
  }

  /** `opportunity.archive` at `expectedVersion`. */
  archive(params: ChangeStateParams, options?: CallOptions): Promise<Opportunity> {
    return this.call('opportunity.archive', params, options);
  }

  /** `opportunity.restore` at `expectedVersion`. */
  restore(params: ChangeStateParams, options?: CallOptions): Promise<Opportunity> {
    return this.call('opportunity.restore', params, options);
  }

  /** `opportunity.changes`: the stored events after `since`; pass `nextSince` back to poll. */
  changes(params: ChangesParams = {}): Promise<ChangesPage> {
    return this.call('opportunity.changes', params);
  }

  /**
   * `opportunity.subscribe` over a WebSocket: the events as an async iterator, resumed after a
   * lost connection (see `Subscription`). With `since`, the stored events after it come first.
   */
  subscribe(params: SubscribeParams = {}, options: SubscribeOptions = {}): Subscription {
    if (this.closed) throw new ClosedError();
    const subscription = new Subscription(this.host(), params, options);
    this.subscriptions.add(subscription);
    return subscription;
  }

  /**
   * `opportunity.unsubscribe`: ends a subscription of this client (the same as its `close()`),
   * or, given an id, the service's subscription of that id on this client's connection.
   */
  async unsubscribe(subscription: Subscription | SubscriptionId): Promise<boolean> {
    if (subscription instanceof Subscription) return subscription.close();
    const connection = await this.connect();
    connection.forget(subscription);
    return (await connection.call('opportunity.unsubscribe', { subscription }, this.timeoutMs)) === true;
  }

  /** `rpc.discover`: the OpenRPC document of every method (needs no token). */
  async discover(): Promise<OpenRpcDocument> {
    return (await this.invoke('rpc.discover', {})) as OpenRpcDocument;
  }

  /** Any method by name, with its generated params and result types. */
  async call<M extends MethodName>(method: M, params: ParamsOf<M>, options?: CallOptions): Promise<ResultOf<M>> {
    let sent: object = params;
    if (this.workspaceId !== undefined && method !== 'opportunity.unsubscribe' && !('workspaceId' in params)) {
      sent = { ...sent, workspaceId: this.workspaceId };
    }
    if (WRITES.has(method)) {
      // One key per logical call, the same for every retry of it: a retry does the work once.
      const given =
        'idempotencyKey' in params && typeof params.idempotencyKey === 'string' ? params.idempotencyKey : undefined;
      sent = { ...sent, idempotencyKey: options?.idempotencyKey ?? given ?? newIdempotencyKey() };
    }
    return (await this.invoke(method, sent)) as ResultOf<M>;
  }

  /** Closes the WebSocket connection and ends every subscription; later calls fail. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.subscriptions].map((s) => s.close()));
    this.connection?.close();
    this.connection = undefined;
  }

  private async invoke(method: string, params: unknown): Promise<unknown> {
    for (let attempt = 1; ; attempt += 1) {
      if (this.closed) throw new ClosedError();
      try {
        return await this.send(method, params);
      } catch (error) {
        if (!(error instanceof OpportunityClientError)) throw error;
        const expired =
          error instanceof RpcError &&
          error.code === ErrorCodes.UNAUTHORIZED &&
          typeof this.token === 'function' &&
          this.transport === 'websocket';
        if (expired && this.connection !== undefined) {
          // The connection's token expired; the next one opens with a fresh token.
          this.connection.close();
          this.connection = undefined;
        }
        if (!(error.retryable || expired) || attempt >= this.retry.attempts || this.closed) throw error;
        await sleep(Math.min(this.retry.maxDelayMs, this.retry.initialDelayMs * 2 ** (attempt - 1)));
      }
    }
  }

  private async send(method: string, params: unknown): Promise<unknown> {
    if (this.transport === 'websocket') {
      const connection = await this.connect();
      return connection.call(method, params, this.timeoutMs);
    }
    const token = await this.currentToken();
    const fetchImpl: FetchLike = this.fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
    return httpCall(
      { url: this.httpUrl, fetch: fetchImpl, headers: { Authorization: `Bearer ${token}` }, timeoutMs: this.timeoutMs },
      this.nextId++,
      method,
      params,
    );
  }

  private async currentToken(): Promise<string> {
    return typeof this.token === 'function' ? await this.token() : this.token;
  }

  private async resolveWebSocketClass(): Promise<WebSocketConstructorLike> {
    if (this.webSocketClass !== undefined) return this.webSocketClass;
    if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
    // Node before 22 has no WebSocket of its own: the ws package's.
    const ws = await import('ws');
    return ws.default;
  }

  /** The shared WebSocket connection, opened when there is none. */
  private connect(): Promise<WsConnection> {
    if (this.closed) return Promise.reject(new ClosedError());
    if (this.connection?.isOpen) return Promise.resolve(this.connection);
    this.connecting ??= (async () => {
      const url = new URL(this.wsUrl);
      url.searchParams.set('access_token', await this.currentToken());
      const connection = await WsConnection.open(
        url.toString(),
        this.where,
        await this.resolveWebSocketClass(),
        this.timeoutMs,
      );
      if (this.closed) {
        connection.close();
        throw new ClosedError();
      }
      this.connection = connection;
      connection.onClose(() => {
        if (this.connection === connection) this.connection = undefined;
      });
      return connection;
    })().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private host(): SubscriptionHost {
    return {
      connect: () => this.connect(),
      prepare: (params) =>
        this.workspaceId === undefined || params.workspaceId !== undefined
          ? params
          : { ...params, workspaceId: this.workspaceId },
      refreshesToken: typeof this.token === 'function',
      drop: (connection) => {
        connection.close();
        if (this.connection === connection) this.connection = undefined;
      },
      timeoutMs: this.timeoutMs,
      reconnect: this.reconnect,
      release: (subscription) => {
        this.subscriptions.delete(subscription);
      },
    };
  }
}
