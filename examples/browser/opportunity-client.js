// opportunity-client, bundled for browsers from clients/typescript/src by
// `npm run bundle:browser` (clients/typescript/scripts/bundle-browser.mjs). Do not edit.

// src/errors.ts
var OpportunityClientError = class extends Error {
  /** Whether the same call may succeed if sent again (the client's retries rely on it). */
  retryable;
  constructor(message, retryable, options) {
    super(message, options);
    this.name = new.target.name;
    this.retryable = retryable;
  }
};
var ErrorCodes = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  PAYLOAD_TOO_LARGE: -32013,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  UNAUTHORIZED: -32001,
  FORBIDDEN: -32003,
  NOT_FOUND: -32004,
  CONFLICT: -32009,
  INTERNAL: -32603
};
function isRecord(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
function stringList(value) {
  return Array.isArray(value) ? value.filter((item) => typeof item === "string") : [];
}
var RpcError = class _RpcError extends OpportunityClientError {
  /** `error.code`: -32602 invalid params, -32009 conflict, … (see `ErrorCodes`). */
  code;
  /** `error.data`, as sent (an empty object when the service sent none). */
  data;
  /** The method that was called, when the error answers a call. */
  method;
  constructor(code, message, data, method) {
    const record = isRecord(data) ? data : {};
    super(message, record["retryable"] === true);
    this.code = code;
    this.data = record;
    this.method = method;
  }
  /** Builds an RpcError from a JSON-RPC `error` member, whatever its shape. */
  static from(error, method) {
    if (!isRecord(error)) return new _RpcError(ErrorCodes.INTERNAL, "malformed JSON-RPC error", void 0, method);
    const code = typeof error["code"] === "number" ? error["code"] : ErrorCodes.INTERNAL;
    const message = typeof error["message"] === "string" ? error["message"] : `JSON-RPC error ${code}`;
    return new _RpcError(code, message, error["data"], method);
  }
  /** `data.code`: `BAD_REQUEST`, `CONFLICT`, `NOT_FOUND`, … */
  get dataCode() {
    const value = this.data["code"];
    return typeof value === "string" ? value : void 0;
  }
  /** `data.httpStatus`: the HTTP status matching the error (informational). */
  get httpStatus() {
    const value = this.data["httpStatus"];
    return typeof value === "number" ? value : void 0;
  }
  /** `data.fieldErrors`: field name (`title`, `solutionFamilies.2`) → messages; `{}` when none. */
  get fieldErrors() {
    const value = this.data["fieldErrors"];
    if (!isRecord(value)) return {};
    const out = {};
    for (const [field, messages] of Object.entries(value)) out[field] = stringList(messages);
    return out;
  }
  /** `data.formErrors`: problems of no single field (unknown fields, rules across fields). */
  get formErrors() {
    return stringList(this.data["formErrors"]);
  }
  /** `data.reason`: `version_mismatch`, `idempotency_key_reused`, `archived`, … */
  get reason() {
    const value = this.data["reason"];
    return typeof value === "string" ? value : void 0;
  }
  /** `data.currentVersion`: the stored version, with `reason: "version_mismatch"`. */
  get currentVersion() {
    const value = this.data["currentVersion"];
    return typeof value === "number" ? value : void 0;
  }
  /** `data.resumeFrom`: where a subscription the service ended may resume (`since`). */
  get resumeFrom() {
    const value = this.data["resumeFrom"];
    return typeof value === "string" ? value : void 0;
  }
  /** `data.requestId`: the id of the service's log line, on internal errors. */
  get requestId() {
    const value = this.data["requestId"];
    return typeof value === "string" ? value : void 0;
  }
  /** `data.detail`: a short description, on errors of the JSON-RPC layer itself. */
  get detail() {
    const value = this.data["detail"];
    return typeof value === "string" ? value : void 0;
  }
};
var TransportError = class extends OpportunityClientError {
  /** The HTTP status, when the failure came with one (an HTTP answer, a refused handshake). */
  status;
  constructor(message, options) {
    super(message, options.retryable, { cause: options.cause });
    this.status = options.status;
  }
};
var SubscriptionLostError = class extends OpportunityClientError {
  /** The last event delivered before it was lost: resume from it with `since`. */
  lastEventId;
  constructor(message, lastEventId, cause) {
    super(message, false, { cause });
    this.lastEventId = lastEventId;
  }
};
var ClosedError = class extends OpportunityClientError {
  constructor(message = "the client was closed") {
    super(message, false);
  }
};

// src/subscription.ts
var SUBSCRIBE = "opportunity.subscribe";
var UNSUBSCRIBE = "opportunity.unsubscribe";
function isRecord2(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
function isEvent(value) {
  return isRecord2(value) && typeof value["eventId"] === "string" && isRecord2(value["opportunity"]);
}
function asClientError(error) {
  if (error instanceof OpportunityClientError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new TransportError(message, { retryable: false, cause: error });
}
var Subscription = class {
  /** Resolves once the service has answered the first subscribe; rejects if it never does. */
  ready;
  host;
  params;
  options;
  reconnect;
  maxBuffered;
  queue = [];
  waiters = [];
  failure;
  finished = false;
  received;
  delivered;
  current;
  endCurrent;
  wake;
  drained;
  resolveReady;
  rejectReady;
  constructor(host, params, options = {}) {
    this.host = host;
    this.params = params;
    this.options = options;
    this.reconnect = { ...host.reconnect, ...options.reconnect };
    this.maxBuffered = Math.max(1, options.maxBuffered ?? 1e3);
    this.received = params.since ?? void 0;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => void 0);
    void this.run();
  }
  /** The service's id of the current subscription (it changes with every resume). */
  get id() {
    return this.current?.id;
  }
  /** The `eventId` of the last event this iterator handed out: a `since` to resume from later. */
  get lastEventId() {
    return this.delivered;
  }
  [Symbol.asyncIterator]() {
    return this;
  }
  next() {
    const event = this.queue.shift();
    if (event !== void 0) {
      this.delivered = event.eventId;
      if (this.queue.length === 0) this.drained?.();
      return Promise.resolve({ value: event, done: false });
    }
    if (this.failure !== void 0) {
      const failure = this.failure;
      this.failure = void 0;
      return Promise.reject(failure);
    }
    if (this.finished) return Promise.resolve({ value: void 0, done: true });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
  async return() {
    await this.close();
    return { value: void 0, done: true };
  }
  /**
   * Ends the subscription: unsubscribes on the service, and ends the iteration once the events
   * already received are read. Answers what `opportunity.unsubscribe` answered (`false` when
   * there was no subscription on the service at that moment).
   */
  async close() {
    if (this.finished && this.current === void 0) return false;
    this.finish(void 0);
    const current = this.current;
    this.current = void 0;
    this.endCurrent?.("closed");
    if (current === void 0) return false;
    current.connection.forget(current.id);
    try {
      return await current.connection.call(UNSUBSCRIBE, { subscription: current.id }, this.host.timeoutMs) === true;
    } catch {
      return false;
    }
  }
  status(status) {
    try {
      this.options.onStatus?.(status);
    } catch {
    }
  }
  async run() {
    let failures = 0;
    let subscribedOnce = false;
    this.status({ state: "connecting" });
    while (!this.finished) {
      let end;
      let connection;
      try {
        connection = await this.host.connect();
        if (this.finished) break;
        const since = this.received;
        const params = this.host.prepare({ ...this.params, ...since === void 0 ? {} : { since } });
        const ended = new Promise((resolve) => {
          this.endCurrent = resolve;
        });
        const sink = {
          onEvent: (event) => this.push(event),
          onEnd: (error) => this.endCurrent?.(error)
        };
        const id = await connection.subscribe(SUBSCRIBE, params, sink, this.host.timeoutMs);
        if (this.finished) {
          connection.forget(id);
          connection.call(UNSUBSCRIBE, { subscription: id }, this.host.timeoutMs).catch(() => void 0);
          break;
        }
        this.current = { connection, id };
        failures = 0;
        if (!subscribedOnce) {
          subscribedOnce = true;
          this.resolveReady(id);
        }
        this.status({ state: "subscribed", subscriptionId: id, since });
        end = await ended;
        this.current = void 0;
      } catch (error) {
        end = asClientError(error);
      }
      this.endCurrent = void 0;
      if (this.finished || end === "closed") break;
      if (end === "paused") {
        this.status({ state: "paused", buffered: this.queue.length });
        await this.untilDrained();
        continue;
      }
      if (end instanceof RpcError && end.resumeFrom !== void 0 && this.received === void 0) {
        this.received = end.resumeFrom;
      }
      if (!this.resumable(end, connection)) {
        this.fail(end);
        break;
      }
      failures += 1;
      if (failures > this.reconnect.attempts) {
        this.fail(
          new SubscriptionLostError(
            `the subscription was lost and ${this.reconnect.attempts} attempts to resume it failed: ${end.message}`,
            this.received,
            end
          )
        );
        break;
      }
      const delayMs = Math.min(this.reconnect.maxDelayMs, this.reconnect.initialDelayMs * 2 ** (failures - 1));
      this.status({ state: "reconnecting", attempt: failures, delayMs, error: end, since: this.received });
      await this.sleep(delayMs);
    }
    if (!subscribedOnce) this.rejectReady(this.failure ?? new ClosedError("the subscription was closed"));
  }
  resumable(error, connection) {
    if (error instanceof RpcError && error.code === ErrorCodes.UNAUTHORIZED) {
      if (!this.host.refreshesToken) return false;
      if (connection !== void 0) this.host.drop(connection);
      return true;
    }
    if (error instanceof TransportError && error.status === 401 && this.host.refreshesToken) return true;
    return error.retryable;
  }
  push(value) {
    if (!isEvent(value)) return;
    if (this.received !== void 0 && value.eventId <= this.received) return;
    this.received = value.eventId;
    const waiter = this.waiters.shift();
    if (waiter !== void 0) {
      this.delivered = value.eventId;
      waiter.resolve({ value, done: false });
      return;
    }
    this.queue.push(value);
    if (this.queue.length >= this.maxBuffered && this.current !== void 0) {
      const { connection, id } = this.current;
      this.current = void 0;
      connection.forget(id);
      connection.call(UNSUBSCRIBE, { subscription: id }, this.host.timeoutMs).catch(() => void 0);
      this.endCurrent?.("paused");
    }
  }
  fail(error) {
    this.finish(error);
  }
  finish(error) {
    if (this.finished) return;
    this.finished = true;
    this.wakeUp();
    this.host.release(this);
    this.status({ state: "closed", error });
    if (error !== void 0) {
      this.rejectReady(error);
      const waiter = this.waiters.shift();
      if (waiter !== void 0) waiter.reject(error);
      else this.failure = error;
    }
    for (const waiter of this.waiters.splice(0)) waiter.resolve({ value: void 0, done: true });
  }
  /** Waits `ms`; `close()` cuts it short. */
  sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.wake === done) this.wake = void 0;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
  /** Waits until the reader has read every buffered event; `close()` cuts it short. */
  untilDrained() {
    if (this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (this.drained === done) this.drained = void 0;
        if (this.wake === done) this.wake = void 0;
        resolve();
      };
      this.drained = done;
      this.wake = done;
    });
  }
  wakeUp() {
    this.wake?.();
    this.drained?.();
  }
};

// src/transport.ts
var OPEN = 1;
function isRecord3(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
function describe(error) {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
    return `${error.message}${cause}`;
  }
  return String(error);
}
function settle(answer, method, where) {
  if (isRecord3(answer) && "error" in answer) throw RpcError.from(answer["error"], method);
  if (isRecord3(answer) && "result" in answer) return answer["result"];
  throw new TransportError(`${where}: the answer to ${method} is not a JSON-RPC answer`, { retryable: false });
}
async function httpCall(target, id, method, params) {
  const body = JSON.stringify({ jsonrpc: "2.0", id, method, params });
  const headers = { "Content-Type": "application/json", Accept: "application/json", ...target.headers };
  let status;
  let text;
  try {
    const response = await target.fetch(target.url, {
      method: "POST",
      headers,
      body,
      signal: AbortSignal.timeout(target.timeoutMs)
    });
    status = response.status;
    text = await response.text();
  } catch (error) {
    throw new TransportError(`HTTP call of ${method} failed: ${describe(error)}`, { retryable: true, cause: error });
  }
  let answer;
  try {
    answer = JSON.parse(text);
  } catch (error) {
    const retryable = status >= 500 || status === 408 || status === 429;
    throw new TransportError(`HTTP ${status} for ${method}: the answer is not JSON`, {
      retryable,
      status,
      cause: error
    });
  }
  return settle(answer, method, `HTTP ${status}`);
}
function subscriptionKey(id) {
  return `${typeof id}:${id}`;
}
var WsConnection = class _WsConnection {
  socket;
  where;
  nextId = 1;
  pending = /* @__PURE__ */ new Map();
  sinks = /* @__PURE__ */ new Map();
  closeListeners = /* @__PURE__ */ new Set();
  closeError;
  constructor(socket, where) {
    this.socket = socket;
    this.where = where;
    socket.addEventListener("message", (event) => this.onMessage(event.data));
    socket.addEventListener("close", (event) => {
      const reason = event.reason ? `: ${event.reason}` : "";
      this.onClosed(
        new TransportError(`the WebSocket to ${where} closed (code ${event.code}${reason})`, { retryable: true })
      );
    });
  }
  /**
   * Opens a connection to `url` (which may carry the token as `access_token`; `where` names the
   * service in messages without it).
   */
  static open(url, where, WebSocketClass, timeoutMs) {
    return new Promise((resolve, reject) => {
      let socket;
      try {
        socket = new WebSocketClass(url);
      } catch (error) {
        reject(
          new TransportError(`cannot open a WebSocket to ${where}: ${describe(error)}`, {
            retryable: false,
            cause: error
          })
        );
        return;
      }
      let settled = false;
      let problem = "";
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        socket.close();
        reject(
          new TransportError(`the WebSocket to ${where} did not open within ${timeoutMs} ms`, { retryable: true })
        );
      }, timeoutMs);
      socket.addEventListener("error", (event) => {
        if (isRecord3(event) && typeof event["message"] === "string") problem = event["message"];
      });
      socket.addEventListener("close", (event) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const status = /\b([1-5]\d\d)\b/.exec(problem)?.[1];
        const code = status === void 0 ? void 0 : Number(status);
        const retryable = code === void 0 || code >= 500 || code === 408 || code === 429;
        const detail = problem ? `: ${problem}` : ` (code ${event.code})`;
        reject(
          new TransportError(`the WebSocket to ${where} did not open${detail}`, {
            retryable,
            ...code === void 0 ? {} : { status: code }
          })
        );
      });
      socket.addEventListener("open", () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(new _WsConnection(socket, where));
      });
    });
  }
  /** Whether calls can be sent. */
  get isOpen() {
    return this.closeError === void 0 && this.socket.readyState === OPEN;
  }
  /** Runs `listener` once, when the connection closes (at once if it is closed). */
  onClose(listener) {
    if (this.closeError) listener(this.closeError);
    else this.closeListeners.add(listener);
  }
  /** One call; `onResult` runs with the result before any later message is read. */
  call(method, params, timeoutMs, onResult) {
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
        this.socket.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
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
  async subscribe(method, params, sink, timeoutMs) {
    let id;
    await this.call(method, params, timeoutMs, (result) => {
      if (typeof result !== "number" && typeof result !== "string") return;
      id = result;
      this.sinks.set(subscriptionKey(result), sink);
    });
    if (id === void 0) throw new TransportError(`${method} answered no subscription id`, { retryable: false });
    return id;
  }
  /** Stops routing a subscription's notifications (what is still sent for it is dropped). */
  forget(id) {
    this.sinks.delete(subscriptionKey(id));
  }
  /** Closes the connection; its calls fail and its subscriptions end with a TransportError. */
  close() {
    this.onClosed(new TransportError(`the WebSocket to ${this.where} was closed by the client`, { retryable: true }));
    try {
      this.socket.close(1e3, "client closed");
    } catch {
    }
  }
  onMessage(data) {
    if (typeof data !== "string") return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    for (const item of Array.isArray(message) ? message : [message]) {
      if (!isRecord3(item)) continue;
      if (typeof item["method"] === "string") {
        this.onNotification(item["params"]);
        continue;
      }
      const id = item["id"];
      const pending = typeof id === "number" ? this.pending.get(id) : void 0;
      if (pending === void 0 || typeof id !== "number") continue;
      this.pending.delete(id);
      clearTimeout(pending.timer);
      let result;
      try {
        result = settle(item, pending.method, this.where);
      } catch (error) {
        pending.reject(
          error instanceof OpportunityClientError ? error : new TransportError(describe(error), { retryable: false })
        );
        continue;
      }
      pending.onResult?.(result);
      pending.resolve(result);
    }
  }
  onNotification(params) {
    if (!isRecord3(params)) return;
    const id = params["subscription"];
    if (typeof id !== "number" && typeof id !== "string") return;
    const key = subscriptionKey(id);
    const sink = this.sinks.get(key);
    if (sink === void 0) return;
    if ("result" in params) {
      sink.onEvent(params["result"]);
    } else if ("error" in params) {
      this.sinks.delete(key);
      sink.onEnd(RpcError.from(params["error"], "opportunity.subscribe"));
    }
  }
  onClosed(error) {
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
};

// src/client.ts
var METHODS = {
  "opportunity.create": { params: "CreateOpportunityParams", result: "Opportunity" },
  "opportunity.get": { params: "OpportunityRef", result: "Opportunity" },
  "opportunity.list": { params: "ListOpportunitiesParams", result: "OpportunityPage" },
  "opportunity.update": { params: "UpdateOpportunityParams", result: "Opportunity" },
  "opportunity.archive": { params: "ChangeStateParams", result: "Opportunity" },
  "opportunity.restore": { params: "ChangeStateParams", result: "Opportunity" },
  "opportunity.changes": { params: "ChangesParams", result: "ChangesPage" },
  "opportunity.subscribe": { params: "SubscribeParams", result: "SubscriptionId" },
  "opportunity.unsubscribe": { params: "UnsubscribeParams", result: "Unsubscribed" }
};
var WRITES = /* @__PURE__ */ new Set([
  "opportunity.create",
  "opportunity.update",
  "opportunity.archive",
  "opportunity.restore"
]);
function newIdempotencyKey() {
  const crypto = globalThis.crypto;
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] ?? 0) & 15 | 64;
  bytes[8] = (bytes[8] ?? 0) & 63 | 128;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
function endpoints(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`not a URL: ${JSON.stringify(url)}`);
  }
  const secure = parsed.protocol === "https:" || parsed.protocol === "wss:";
  if (!secure && parsed.protocol !== "http:" && parsed.protocol !== "ws:") {
    throw new TypeError(`the service URL must be http(s):// or ws(s)://, not ${parsed.protocol}//`);
  }
  parsed.hash = "";
  parsed.searchParams.delete("access_token");
  const where = parsed.host;
  parsed.protocol = secure ? "https:" : "http:";
  const http = parsed.toString();
  parsed.protocol = secure ? "wss:" : "ws:";
  return { http, ws: parsed.toString(), where };
}
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
var OpportunityClient = class {
  /** The HTTP endpoint (`http://host:port/`). */
  httpUrl;
  /** The WebSocket endpoint, without the token (`ws://host:port/`). */
  wsUrl;
  /** How calls travel. */
  transport;
  where;
  token;
  workspaceId;
  timeoutMs;
  retry;
  reconnect;
  fetchImpl;
  webSocketClass;
  subscriptions = /* @__PURE__ */ new Set();
  connection;
  connecting;
  nextId = 1;
  closed = false;
  constructor(options) {
    const urls = endpoints(options.url);
    this.httpUrl = urls.http;
    this.wsUrl = urls.ws;
    this.where = urls.where;
    this.transport = options.transport ?? (/^wss?:/i.test(options.url) ? "websocket" : "http");
    this.token = options.token;
    this.workspaceId = options.workspaceId;
    this.timeoutMs = options.timeoutMs ?? 3e4;
    this.retry = { attempts: 3, initialDelayMs: 100, maxDelayMs: 2e3, ...options.retry };
    this.reconnect = { attempts: 8, initialDelayMs: 200, maxDelayMs: 5e3, ...options.reconnect };
    this.fetchImpl = options.fetch;
    this.webSocketClass = options.WebSocket;
  }
  /** `opportunity.create`: a new opportunity in the workspace; answered once stored. */
  create(params, options) {
    return this.call("opportunity.create", params, options);
  }
  /** `opportunity.get`: one opportunity by id, archived or not. */
  get(ref) {
    return this.call("opportunity.get", typeof ref === "string" ? { id: ref } : ref);
  }
  /** `opportunity.list`: one page; pass `nextCursor` back as `cursor` for the next. */
  list(params = {}) {
    return this.call("opportunity.list", params);
  }
  /** Every opportunity `opportunity.list` finds, page after page. */
  async *listAll(params = {}) {
    let cursor = null;
    do {
      const page = await this.list(cursor === null ? params : { ...params, cursor });
      yield* page.items;
      cursor = page.nextCursor;
    } while (cursor !== null);
  }
  /**
   * `opportunity.update`: the named fields at `expectedVersion` (absent: unchanged; `null`:
   * cleared). A stale version is an RpcError with `reason` `version_mismatch` and `currentVersion`.
   */
  update(params, options) {
    return this.call("opportunity.update", params, options);
  }
  /** `opportunity.archive` at `expectedVersion`. */
  archive(params, options) {
    return this.call("opportunity.archive", params, options);
  }
  /** `opportunity.restore` at `expectedVersion`. */
  restore(params, options) {
    return this.call("opportunity.restore", params, options);
  }
  /** `opportunity.changes`: the stored events after `since`; pass `nextSince` back to poll. */
  changes(params = {}) {
    return this.call("opportunity.changes", params);
  }
  /**
   * `opportunity.subscribe` over a WebSocket: the events as an async iterator, resumed after a
   * lost connection (see `Subscription`). With `since`, the stored events after it come first.
   */
  subscribe(params = {}, options = {}) {
    if (this.closed) throw new ClosedError();
    const subscription = new Subscription(this.host(), params, options);
    this.subscriptions.add(subscription);
    return subscription;
  }
  /**
   * `opportunity.unsubscribe`: ends a subscription of this client (the same as its `close()`),
   * or, given an id, the service's subscription of that id on this client's connection.
   */
  async unsubscribe(subscription) {
    if (subscription instanceof Subscription) return subscription.close();
    const connection = await this.connect();
    connection.forget(subscription);
    return await connection.call("opportunity.unsubscribe", { subscription }, this.timeoutMs) === true;
  }
  /** `rpc.discover`: the OpenRPC document of every method (needs no token). */
  async discover() {
    return await this.invoke("rpc.discover", {});
  }
  /** Any method by name, with its generated params and result types. */
  async call(method, params, options) {
    let sent = params;
    if (this.workspaceId !== void 0 && method !== "opportunity.unsubscribe" && !("workspaceId" in params)) {
      sent = { ...sent, workspaceId: this.workspaceId };
    }
    if (WRITES.has(method)) {
      const given = "idempotencyKey" in params && typeof params.idempotencyKey === "string" ? params.idempotencyKey : void 0;
      sent = { ...sent, idempotencyKey: options?.idempotencyKey ?? given ?? newIdempotencyKey() };
    }
    return await this.invoke(method, sent);
  }
  /** Closes the WebSocket connection and ends every subscription; later calls fail. */
  async close() {
    this.closed = true;
    await Promise.all([...this.subscriptions].map((s) => s.close()));
    this.connection?.close();
    this.connection = void 0;
  }
  async invoke(method, params) {
    for (let attempt = 1; ; attempt += 1) {
      if (this.closed) throw new ClosedError();
      try {
        return await this.send(method, params);
      } catch (error) {
        if (!(error instanceof OpportunityClientError)) throw error;
        const expired = error instanceof RpcError && error.code === ErrorCodes.UNAUTHORIZED && typeof this.token === "function" && this.transport === "websocket";
        if (expired && this.connection !== void 0) {
          this.connection.close();
          this.connection = void 0;
        }
        if (!(error.retryable || expired) || attempt >= this.retry.attempts || this.closed) throw error;
        await sleep(Math.min(this.retry.maxDelayMs, this.retry.initialDelayMs * 2 ** (attempt - 1)));
      }
    }
  }
  async send(method, params) {
    if (this.transport === "websocket") {
      const connection = await this.connect();
      return connection.call(method, params, this.timeoutMs);
    }
    const token = await this.currentToken();
    const fetchImpl = this.fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
    return httpCall(
      { url: this.httpUrl, fetch: fetchImpl, headers: { Authorization: `Bearer ${token}` }, timeoutMs: this.timeoutMs },
      this.nextId++,
      method,
      params
    );
  }
  async currentToken() {
    return typeof this.token === "function" ? await this.token() : this.token;
  }
  async resolveWebSocketClass() {
    if (this.webSocketClass !== void 0) return this.webSocketClass;
    if (typeof globalThis.WebSocket === "function") return globalThis.WebSocket;
    const ws = await import("ws");
    return ws.default;
  }
  /** The shared WebSocket connection, opened when there is none. */
  connect() {
    if (this.closed) return Promise.reject(new ClosedError());
    if (this.connection?.isOpen) return Promise.resolve(this.connection);
    this.connecting ??= (async () => {
      const url = new URL(this.wsUrl);
      url.searchParams.set("access_token", await this.currentToken());
      const connection = await WsConnection.open(
        url.toString(),
        this.where,
        await this.resolveWebSocketClass(),
        this.timeoutMs
      );
      if (this.closed) {
        connection.close();
        throw new ClosedError();
      }
      this.connection = connection;
      connection.onClose(() => {
        if (this.connection === connection) this.connection = void 0;
      });
      return connection;
    })().finally(() => {
      this.connecting = void 0;
    });
    return this.connecting;
  }
  host() {
    return {
      connect: () => this.connect(),
      prepare: (params) => this.workspaceId === void 0 || params.workspaceId !== void 0 ? params : { ...params, workspaceId: this.workspaceId },
      refreshesToken: typeof this.token === "function",
      drop: (connection) => {
        connection.close();
        if (this.connection === connection) this.connection = void 0;
      },
      timeoutMs: this.timeoutMs,
      reconnect: this.reconnect,
      release: (subscription) => {
        this.subscriptions.delete(subscription);
      }
    };
  }
};
export {
  ClosedError,
  ErrorCodes,
  METHODS,
  OpportunityClient,
  OpportunityClientError,
  RpcError,
  Subscription,
  SubscriptionLostError,
  TransportError,
  newIdempotencyKey
};
