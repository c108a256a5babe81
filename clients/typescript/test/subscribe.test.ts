// Subscriptions against the real binary: live events, filters, replay with `since`,
// unsubscribing, typed refusals, and the resume after the service's WebSocket was closed
// (the service restarted on the same database and port).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  ErrorCodes,
  type OpportunityEvent,
  OpportunityClient,
  RpcError,
  type Subscription,
  type SubscriptionStatus,
} from '../src/index.js';
import { CUSTOMER, Service, within } from './support/service.js';

/** The next event of `subscription`, within a few seconds. */
async function nextEvent(subscription: Subscription, ms = 5_000): Promise<OpportunityEvent> {
  const next = await within('the next event', subscription.next(), ms);
  assert.equal(next.done, false, 'the subscription ended');
  assert.ok(next.value !== undefined);
  return next.value;
}

describe('subscriptions', () => {
  let service: Service;
  let workspace: string;
  let writer: OpportunityClient;
  let reader: OpportunityClient;

  before(async () => {
    service = await Service.start();
    workspace = service.workspace;
    writer = new OpportunityClient({ url: service.httpUrl, token: service.token() });
    reader = new OpportunityClient({ url: service.wsUrl, token: service.token() });
  });

  after(async () => {
    await writer?.close();
    await reader?.close();
    await service?.close();
  });

  test('a subscription sees a create made over HTTP', async () => {
    const subscription = reader.subscribe();
    try {
      await within('subscribed', subscription.ready);
      const made = await writer.create({
        customerId: CUSTOMER,
        title: 'BMS service agreement, Depot 4',
        pipelineType: 'service_agreement',
      });
      const event = await nextEvent(subscription);
      assert.equal(event.type, 'created');
      assert.match(event.eventId, /^\d{20}$/);
      assert.equal(event.workspaceId, workspace);
      assert.equal(event.actor, service.user);
      assert.deepEqual(event.opportunity, made);
      assert.equal(subscription.lastEventId, event.eventId);
    } finally {
      await subscription.close();
    }
  });

  test('filters apply to the opportunity after the change; close() ends the iteration', async () => {
    const subscription = reader.subscribe({ pipelineType: ['retrofit'], stage: 'lead' });
    await within('subscribed', subscription.ready);
    await writer.create({ customerId: CUSTOMER, title: 'Not this one', pipelineType: 'new_construction' });
    const wanted = await writer.create({
      customerId: CUSTOMER,
      title: 'Rooftop units, Depot 4',
      pipelineType: 'retrofit',
    });
    await writer.update({ id: wanted.id, expectedVersion: 1, stage: 'qualified' });
    const event = await nextEvent(subscription);
    assert.equal(event.opportunity.id, wanted.id);
    assert.equal(event.type, 'created');
    assert.equal(await subscription.close(), true);
    assert.deepEqual(await subscription.next(), { value: undefined, done: true });
    assert.equal(await subscription.close(), false);
  });

  test('leaving a for-await loop unsubscribes', async () => {
    const subscription = reader.subscribe();
    const id = await within('subscribed', subscription.ready);
    const made = await writer.create({ customerId: CUSTOMER, title: 'Loop', pipelineType: 'other' });
    for await (const event of subscription) {
      assert.equal(event.opportunity.id, made.id);
      break;
    }
    // The service has no subscription of that id any more.
    assert.equal(await reader.unsubscribe(id), false);
  });

  test('with since, the stored events after it come first', async () => {
    const start = (await writer.changes({ limit: 1000 })).nextSince;
    const a = await writer.create({ customerId: CUSTOMER, title: 'Replay A', pipelineType: 'other' });
    const b = await writer.create({ customerId: CUSTOMER, title: 'Replay B', pipelineType: 'other' });
    const subscription = reader.subscribe({ since: start });
    try {
      const first = await nextEvent(subscription);
      const second = await nextEvent(subscription);
      assert.deepEqual([first.opportunity.id, second.opportunity.id], [a.id, b.id]);
      const c = await writer.create({ customerId: CUSTOMER, title: 'Replay C (live)', pipelineType: 'other' });
      assert.equal((await nextEvent(subscription)).opportunity.id, c.id);
    } finally {
      await subscription.close();
    }
  });

  test('a client over HTTP subscribes over a WebSocket of its own', async () => {
    const subscription = writer.subscribe({ stage: ['won'] });
    try {
      await within('subscribed', subscription.ready);
      const made = await writer.create({
        customerId: CUSTOMER,
        title: 'Won at once',
        pipelineType: 'expansion',
        stage: 'won',
      });
      assert.equal((await nextEvent(subscription)).opportunity.id, made.id);
    } finally {
      await subscription.close();
    }
  });

  test('bad params end the subscription with a typed error', async () => {
    const bogus = { stage: ['lead', 'bogus'] } as unknown as Parameters<OpportunityClient['subscribe']>[0];
    const subscription = reader.subscribe(bogus);
    const error = await subscription.ready.then(
      () => assert.fail('subscribed with a bogus stage'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof RpcError, String(error));
    assert.equal(error.code, ErrorCodes.INVALID_PARAMS);
    assert.deepEqual(error.fieldErrors['stage.1'], [
      'must be one of: lead, qualified, survey, proposal, negotiation, won, lost',
    ]);
    await assert.rejects(subscription.next(), RpcError);
    assert.deepEqual(await subscription.next(), { value: undefined, done: true });
  });

  test('opportunity.subscribe sent over HTTP is refused by the service', async () => {
    const error = await writer.call('opportunity.subscribe', {}).then(
      () => assert.fail('subscribed over HTTP'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof RpcError, String(error));
    assert.equal(error.code, ErrorCodes.INVALID_REQUEST);
    assert.match(error.message, /WebSocket/);
  });

  test('after the service closed the WebSocket, the subscription resumes with since = the last eventId', async () => {
    const statuses: SubscriptionStatus[] = [];
    const follower = new OpportunityClient({
      url: service.wsUrl,
      // A function: every new connection asks for the token again.
      token: () => service.token(),
      // The first retry waits long enough for the restart, so that B is committed while the
      // subscription is away: only a resume with `since` can deliver it.
      reconnect: { initialDelayMs: 1_500, maxDelayMs: 2_000, attempts: 6 },
    });
    const subscription = follower.subscribe({}, { onStatus: (s) => statuses.push(s) });
    try {
      const firstId = await within('subscribed', subscription.ready);
      const a = await writer.create({ customerId: CUSTOMER, title: 'Before the restart', pipelineType: 'retrofit' });
      const eventA = await nextEvent(subscription);
      assert.equal(eventA.opportunity.id, a.id);

      await service.restart();
      const b = await writer.create({ customerId: CUSTOMER, title: 'While it was away', pipelineType: 'retrofit' });
      const eventB = await nextEvent(subscription, 15_000);
      assert.equal(eventB.opportunity.id, b.id, 'the first event after the resume is the one committed while away');
      assert.ok(eventB.eventId > eventA.eventId);

      const c = await writer.create({ customerId: CUSTOMER, title: 'After the resume', pipelineType: 'retrofit' });
      const eventC = await nextEvent(subscription);
      assert.equal(eventC.opportunity.id, c.id);

      // What it went through: lost, reconnected, subscribed again from A's eventId.
      const reconnecting = statuses.find((s) => s.state === 'reconnecting');
      assert.ok(reconnecting !== undefined, JSON.stringify(statuses));
      const subscribed = statuses.filter((s) => s.state === 'subscribed');
      assert.equal(subscribed.length, 2, JSON.stringify(statuses));
      const [first, again] = subscribed;
      assert.ok(first?.state === 'subscribed' && again?.state === 'subscribed');
      assert.equal(first.since, undefined);
      assert.equal(first.subscriptionId, firstId);
      assert.equal(again.since, eventA.eventId);
      assert.equal(subscription.id, again.subscriptionId);
      assert.equal(subscription.lastEventId, eventC.eventId);
    } finally {
      await subscription.close();
      await follower.close();
    }
  });

  test('calls over a WebSocket the service closed go over a new connection', async () => {
    const made = await reader.create({ customerId: CUSTOMER, title: 'Across a restart', pipelineType: 'other' });
    await service.restart();
    // The call may meet the old connection, closed: it is retried on a new one.
    assert.equal((await reader.get(made.id)).title, 'Across a restart');
  });
});
