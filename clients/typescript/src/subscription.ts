// A subscription to the change feed as an async iterator of events, resumed with `since` after
// a lost connection or an end the service announces (slow consumer, database unavailable).

import {
  ClosedError,
  ErrorCodes,
  OpportunityClientError,
  RpcError,
  SubscriptionLostError,
  TransportError,
} from './errors.js';
import type { EventId, OpportunityEvent, SubscribeParams, SubscriptionId } from './generated.js';
import type { SubscriptionSink, WsConnection } from './transport.js';

/** How a subscription retries after it was lost. */
export interface ReconnectOptions {
  /** Consecutive failed attempts before giving up (default 8); the count restarts once subscribed. */
  readonly attempts?: number;
  /** Wait before the first attempt, doubled for each next one (default 200 ms). */
  readonly initialDelayMs?: number;
  /** The longest wait between attempts (default 5,000 ms). */
  readonly maxDelayMs?: number;
}

/** Where a subscription stands; `SubscribeOptions.onStatus` hears every change. */
export type SubscriptionStatus =
  | { readonly state: 'connecting' }
  | { readonly state: 'subscribed'; readonly subscriptionId: SubscriptionId; readonly since: EventId | undefined }
  | {
      readonly state: 'reconnecting';
      readonly attempt: number;
      readonly delayMs: number;
      readonly error: OpportunityClientError;
      readonly since: EventId | undefined;
    }
  | { readonly state: 'paused'; readonly buffered: number }
  | { readonly state: 'closed'; readonly error: OpportunityClientError | undefined };

/** Options of `OpportunityClient.subscribe`. */
export interface SubscribeOptions {
  /** Hears every change of state (connecting, subscribed, reconnecting, …). */
  readonly onStatus?: (status: SubscriptionStatus) => void;
  /**
   * Events kept for a reader that does not keep up (default 1,000). Beyond it the subscription
   * is paused on the service and resumed with `since` once the reader has caught up, so nothing
   * is lost and memory stays bounded.
   */
  readonly maxBuffered?: number;
  /** Overrides the client's reconnect options for this subscription. */
  readonly reconnect?: ReconnectOptions;
}

/** What a subscription needs of its client. */
export interface SubscriptionHost {
  connect(): Promise<WsConnection>;
  /** The params as sent: with the client's workspace when the caller named none. */
  prepare(params: SubscribeParams): SubscribeParams;
  /** Whether a new connection would carry a new token (the token is a function). */
  readonly refreshesToken: boolean;
  /** Closes `connection` so that the next `connect` opens another one (with a fresh token). */
  drop(connection: WsConnection): void;
  readonly timeoutMs: number;
  readonly reconnect: Required<ReconnectOptions>;
  release(subscription: Subscription): void;
}

const SUBSCRIBE = 'opportunity.subscribe';
const UNSUBSCRIBE = 'opportunity.unsubscribe';

type End = OpportunityClientError | 'paused' | 'closed';

interface Waiter {
  resolve(result: IteratorResult<OpportunityEvent, undefined>): void;
  reject(error: unknown): void;
}

function isRecord(value: unknown): value is Readonly<Record<string, unknown>> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Enough of an event to place it in the feed; the rest is the service's word. */
function isEvent(value: unknown): value is OpportunityEvent {
  return isRecord(value) && typeof value['eventId'] === 'string' && isRecord(value['opportunity']);
}

function asClientError(error: unknown): OpportunityClientError {
  if (error instanceof OpportunityClientError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new TransportError(message, { retryable: false, cause: error });
}

/**
 * The events of `opportunity.subscribe`, oldest first, as an async iterator:
 *
 * ```ts
 * for await (const event of client.subscribe({ stage: ['won'] })) console.log(event.opportunity.title);
 * ```
 *
 * It remembers the last event it received; when the connection is lost, or the service ends the
 * subscription with a retryable error, it connects again and subscribes with `since` set to
 * that event, so that no event is missed and none comes twice. Errors that a retry cannot mend
 * (bad params, FORBIDDEN, `events_expired`) end the iteration by throwing. Leaving a `for await`
 * loop, or `close()`, unsubscribes.
 */
export class Subscription implements AsyncIterableIterator<OpportunityEvent, undefined> {
  /** Resolves once the service has answered the first subscribe; rejects if it never does. */
  readonly ready: Promise<SubscriptionId>;

  private readonly host: SubscriptionHost;
  private readonly params: SubscribeParams;
  private readonly options: SubscribeOptions;
  private readonly reconnect: Required<ReconnectOptions>;
  private readonly maxBuffered: number;
  private readonly queue: OpportunityEvent[] = [];
  private readonly waiters: Waiter[] = [];
  private failure: OpportunityClientError | undefined;
  private finished = false;
  private received: EventId | undefined;
  private delivered: EventId | undefined;
  private current: { readonly connection: WsConnection; readonly id: SubscriptionId } | undefined;
  private endCurrent: ((end: End) => void) | undefined;
  private wake: (() => void) | undefined;
  private drained: (() => void) | undefined;
  private resolveReady!: (id: SubscriptionId) => void;
  private rejectReady!: (error: unknown) => void;

  constructor(host: SubscriptionHost, params: SubscribeParams, options: SubscribeOptions = {}) {
    this.host = host;
    this.params = params;
    this.options = options;
    this.reconnect = { ...host.reconnect, ...options.reconnect };
    this.maxBuffered = Math.max(1, options.maxBuffered ?? 1000);
    this.received = params.since ?? undefined;
    this.ready = new Promise<SubscriptionId>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    // A caller that only iterates need not await `ready`: its rejection is not unhandled.
    this.ready.catch(() => undefined);
    void this.run();
  }

  /** The service's id of the current subscription (it changes with every resume). */
  get id(): SubscriptionId | undefined {
    return this.current?.id;
  }

  /** The `eventId` of the last event this iterator handed out: a `since` to resume from later. */
  get lastEventId(): EventId | undefined {
    return this.delivered;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<OpportunityEvent, undefined>> {
    const event = this.queue.shift();
    if (event !== undefined) {
      this.delivered = event.eventId;
      if (this.queue.length === 0) this.drained?.();
      return Promise.resolve({ value: event, done: false });
    }
    if (this.failure !== undefined) {
      const failure = this.failure;
      this.failure = undefined;
      return Promise.reject(failure);
    }
    if (this.finished) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  async return(): Promise<IteratorResult<OpportunityEvent, undefined>> {
    await this.close();
    return { value: undefined, done: true };
  }

  /**
   * Ends the subscription: unsubscribes on the service, and ends the iteration once the events
   * already received are read. Answers what `opportunity.unsubscribe` answered (`false` when
   * there was no subscription on the service at that moment).
   */
  async close(): Promise<boolean> {
    if (this.finished && this.current === undefined) return false;
    this.finish(undefined);
    const current = this.current;
    this.current = undefined;
    this.endCurrent?.('closed');
    if (current === undefined) return false;
    current.connection.forget(current.id);
    try {
      return (await current.connection.call(UNSUBSCRIBE, { subscription: current.id }, this.host.timeoutMs)) === true;
    } catch {
      return false;
    }
  }

  private status(status: SubscriptionStatus): void {
    try {
      this.options.onStatus?.(status);
    } catch {
      // a listener's failure is not the subscription's
    }
  }

  private async run(): Promise<void> {
    let failures = 0;
    let subscribedOnce = false;
    this.status({ state: 'connecting' });
    while (!this.finished) {
      let end: End;
      let connection: WsConnection | undefined;
      try {
        connection = await this.host.connect();
        if (this.finished) break;
        const since = this.received;
        const params = this.host.prepare({ ...this.params, ...(since === undefined ? {} : { since }) });
        const ended = new Promise<End>((resolve) => {
          this.endCurrent = resolve;
        });
        const sink: SubscriptionSink = {
          onEvent: (event) => this.push(event),
          onEnd: (error) => this.endCurrent?.(error),
        };
        const id = await connection.subscribe(SUBSCRIBE, params, sink, this.host.timeoutMs);
        if (this.finished) {
          connection.forget(id);
          connection.call(UNSUBSCRIBE, { subscription: id }, this.host.timeoutMs).catch(() => undefined);
          break;
        }
        this.current = { connection, id };
        failures = 0;
        if (!subscribedOnce) {
          subscribedOnce = true;
          this.resolveReady(id);
        }
        this.status({ state: 'subscribed', subscriptionId: id, since });
        end = await ended;
        this.current = undefined;
      } catch (error) {
        end = asClientError(error);
      }
      this.endCurrent = undefined;
      if (this.finished || end === 'closed') break;
      if (end === 'paused') {
        this.status({ state: 'paused', buffered: this.queue.length });
        await this.untilDrained();
        continue;
      }
      // The service names where to resume; before the first event that is where it started.
      if (end instanceof RpcError && end.resumeFrom !== undefined && this.received === undefined) {
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
            end,
          ),
        );
        break;
      }
      const delayMs = Math.min(this.reconnect.maxDelayMs, this.reconnect.initialDelayMs * 2 ** (failures - 1));
      this.status({ state: 'reconnecting', attempt: failures, delayMs, error: end, since: this.received });
      await this.sleep(delayMs);
    }
    if (!subscribedOnce) this.rejectReady(this.failure ?? new ClosedError('the subscription was closed'));
  }

  private resumable(error: OpportunityClientError, connection: WsConnection | undefined): boolean {
    if (error instanceof RpcError && error.code === ErrorCodes.UNAUTHORIZED) {
      // The token expired: a new connection with a new token can resume, if there is one.
      if (!this.host.refreshesToken) return false;
      if (connection !== undefined) this.host.drop(connection);
      return true;
    }
    if (error instanceof TransportError && error.status === 401 && this.host.refreshesToken) return true;
    return error.retryable;
  }

  private push(value: unknown): void {
    if (!isEvent(value)) return;
    // Event ids have a fixed width, so they compare as text; an old one is a repeat.
    if (this.received !== undefined && value.eventId <= this.received) return;
    this.received = value.eventId;
    const waiter = this.waiters.shift();
    if (waiter !== undefined) {
      this.delivered = value.eventId;
      waiter.resolve({ value, done: false });
      return;
    }
    this.queue.push(value);
    if (this.queue.length >= this.maxBuffered && this.current !== undefined) {
      // Stop the flow; what follows is read again from the feed once the reader caught up.
      const { connection, id } = this.current;
      this.current = undefined;
      connection.forget(id);
      connection.call(UNSUBSCRIBE, { subscription: id }, this.host.timeoutMs).catch(() => undefined);
      this.endCurrent?.('paused');
    }
  }

  private fail(error: OpportunityClientError): void {
    this.finish(error);
  }

  private finish(error: OpportunityClientError | undefined): void {
    if (this.finished) return;
    this.finished = true;
    this.wakeUp();
    this.host.release(this);
    this.status({ state: 'closed', error });
    if (error !== undefined) {
      this.rejectReady(error);
      const waiter = this.waiters.shift();
      if (waiter !== undefined) waiter.reject(error);
      else this.failure = error;
    }
    for (const waiter of this.waiters.splice(0)) waiter.resolve({ value: undefined, done: true });
  }

  /** Waits `ms`; `close()` cuts it short. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        if (this.wake === done) this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  /** Waits until the reader has read every buffered event; `close()` cuts it short. */
  private untilDrained(): Promise<void> {
    if (this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        if (this.drained === done) this.drained = undefined;
        if (this.wake === done) this.wake = undefined;
        resolve();
      };
      this.drained = done;
      this.wake = done;
    });
  }

  private wakeUp(): void {
    this.wake?.();
    this.drained?.();
  }
}
