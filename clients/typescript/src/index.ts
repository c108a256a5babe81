// opportunity-client: a typed client of opportunity-service's JSON-RPC API.

export * from './generated.js';
export {
  type CallOptions,
  type ClientOptions,
  METHODS,
  type MethodName,
  newIdempotencyKey,
  OpportunityClient,
  type ParamsOf,
  type ResultOf,
  type RetryOptions,
  type TokenSource,
} from './client.js';
export {
  ClosedError,
  ErrorCodes,
  type KnownReason,
  OpportunityClientError,
  RpcError,
  type RpcErrorData,
  type RpcErrorDataCode,
  SubscriptionLostError,
  TransportError,
} from './errors.js';
export { type ReconnectOptions, type SubscribeOptions, Subscription, type SubscriptionStatus } from './subscription.js';
export type {
  FetchLike,
  WebSocketConstructorLike,
  WebSocketLike,
  WsCloseEventLike,
  WsMessageEventLike,
} from './transport.js';
