// Every method of the service through the client, over HTTP and over WebSocket, against the
// real binary: answers, typed errors (validation, version_mismatch, archived, not found,
// idempotency), paging and the change feed.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import {
  type CreateOpportunityParams,
  ErrorCodes,
  type Opportunity,
  OpportunityClient,
  RpcError,
  TransportError,
} from '../src/index.js';
import { CUSTOMER, Service } from './support/service.js';

let service: Service;

before(async () => {
  service = await Service.start();
});

after(async () => {
  await service?.close();
});

/** The RpcError a call failed with (and a failure when it did not fail so). */
async function rpcError(call: Promise<unknown>): Promise<RpcError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof RpcError, `expected an RpcError, got ${String(error)}`);
    return error;
  }
  assert.fail('the call succeeded');
}

for (const transport of ['http', 'websocket'] as const) {
  describe(`over ${transport}`, () => {
    // Each transport acts in a workspace of its own, so that its change feed is its own.
    const workspace = randomUUID();
    let client: OpportunityClient;

    before(() => {
      const url = transport === 'http' ? service.httpUrl : service.wsUrl;
      client = new OpportunityClient({ url, token: service.token({ workspaces: [workspace] }) });
      assert.equal(client.transport, transport);
    });

    after(async () => {
      await client?.close();
    });

    const chiller: CreateOpportunityParams = {
      customerId: CUSTOMER,
      title: '  Chiller retrofit, Building C  ',
      pipelineType: 'retrofit',
      estimatedValue: 125000.5,
      expectedCloseDate: '2027-03-31T19:00:00+02:00',
      solutionFamilies: ['hvac controls'],
    };
    let created: Opportunity;

    test('create answers the stored opportunity', async () => {
      created = await client.create(chiller);
      assert.match(created.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7/);
      assert.equal(created.workspaceId, workspace);
      assert.equal(created.title, 'Chiller retrofit, Building C');
      assert.equal(created.stage, 'lead');
      assert.equal(created.pipelineType, 'retrofit');
      assert.equal(created.estimatedValue, 125000.5);
      assert.equal(created.expectedCloseDate, '2027-03-31T17:00:00Z');
      assert.deepEqual(created.solutionFamilies, ['hvac controls']);
      assert.equal(created.ownerUserId, service.user);
      assert.equal(created.createdBy, service.user);
      assert.equal(created.version, 1);
      assert.equal(created.archivedAt, null);
      assert.equal(created.createdAt, created.updatedAt);
    });

    test('get answers it by id, in any case', async () => {
      assert.deepEqual(await client.get(created.id), created);
      assert.deepEqual(await client.get({ id: created.id.toUpperCase() }), created);
    });

    test('get of an unknown id is NOT_FOUND', async () => {
      const error = await rpcError(client.get('01a2345b-0000-7000-8000-000000000000'));
      assert.equal(error.code, ErrorCodes.NOT_FOUND);
      assert.equal(error.dataCode, 'NOT_FOUND');
      assert.equal(error.httpStatus, 404);
      assert.equal(error.retryable, false);
    });

    test('update changes the named fields, null clears one', async () => {
      const updated = await client.update({
        id: created.id,
        expectedVersion: 1,
        stage: 'proposal',
        probability: 60,
        estimatedValue: null,
        bidDueDate: '2027-01-20T17:00:00+01:00',
      });
      assert.equal(updated.version, 2);
      assert.equal(updated.stage, 'proposal');
      assert.equal(updated.probability, 60);
      assert.equal(updated.estimatedValue, null);
      assert.equal(updated.bidDueDate, '2027-01-20T16:00:00Z');
      assert.equal(updated.title, created.title);
      assert.equal(updated.createdAt, created.createdAt);
    });

    test('a stale expectedVersion is a version_mismatch conflict with currentVersion', async () => {
      const error = await rpcError(client.update({ id: created.id, expectedVersion: 1, stage: 'negotiation' }));
      assert.equal(error.code, ErrorCodes.CONFLICT);
      assert.equal(error.dataCode, 'CONFLICT');
      assert.equal(error.reason, 'version_mismatch');
      assert.equal(error.currentVersion, 2);
      assert.equal(error.retryable, false);
      assert.equal(error.method, 'opportunity.update');
      assert.equal((await client.get(created.id)).stage, 'proposal');
    });

    test('invalid params are reported at once: fieldErrors and formErrors', async () => {
      const params = { title: ' ', probability: 101, pipeline_type: 'retrofit' };
      // Deliberately wrong params, as a caller without types could send them.
      const error = await rpcError(client.create(params as unknown as CreateOpportunityParams));
      assert.equal(error.code, ErrorCodes.INVALID_PARAMS);
      assert.equal(error.dataCode, 'BAD_REQUEST');
      assert.deepEqual(error.fieldErrors['customerId'], ['is required']);
      assert.deepEqual(error.fieldErrors['pipelineType'], ['is required']);
      assert.deepEqual(error.fieldErrors['title'], ['must not be empty']);
      assert.deepEqual(error.fieldErrors['probability'], ['must be between 0 and 100']);
      assert.deepEqual(error.formErrors, ['unknown field "pipeline_type"']);
      assert.equal(error.reason, undefined);
      assert.equal(error.currentVersion, undefined);
    });

    test('archive, an update of the archived one, list with archived, restore', async () => {
      const archived = await client.archive({ id: created.id, expectedVersion: 2 });
      assert.equal(archived.version, 3);
      assert.notEqual(archived.archivedAt, null);
      const refused = await rpcError(client.update({ id: created.id, expectedVersion: 3, priority: 'medium' }));
      assert.equal(refused.reason, 'archived');
      assert.equal((await client.list({ titleContains: 'Chiller' })).items.length, 0);
      const only = await client.list({ titleContains: 'Chiller', archived: 'only' });
      assert.deepEqual(
        only.items.map((o) => o.id),
        [created.id],
      );
      const restored = await client.restore({ id: created.id, expectedVersion: 3 });
      assert.equal(restored.version, 4);
      assert.equal(restored.archivedAt, null);
      const stale = await rpcError(client.archive({ id: created.id, expectedVersion: 3 }));
      assert.equal(stale.reason, 'version_mismatch');
      assert.equal(stale.currentVersion, 4);
    });

    test('list pages with nextCursor, and listAll follows it', async () => {
      const marker = `page-${transport}-${randomUUID().slice(0, 8)}`;
      const made: string[] = [];
      for (const value of [300, 100, 200]) {
        const o = await client.create({
          customerId: CUSTOMER,
          title: `${marker} ${value}`,
          pipelineType: 'expansion',
          estimatedValue: value,
        });
        made.push(o.id);
      }
      const first = await client.list({ titleContains: marker, orderBy: 'estimatedValue', order: 'asc', limit: 2 });
      assert.deepEqual(
        first.items.map((o) => o.estimatedValue),
        [100, 200],
      );
      assert.equal(typeof first.nextCursor, 'string');
      const second = await client.list({
        titleContains: marker,
        orderBy: 'estimatedValue',
        order: 'asc',
        limit: 2,
        cursor: first.nextCursor ?? '',
      });
      assert.deepEqual(
        second.items.map((o) => o.estimatedValue),
        [300],
      );
      assert.equal(second.nextCursor, null);
      const all: Opportunity[] = [];
      for await (const o of client.listAll({ titleContains: marker, limit: 1 })) all.push(o);
      assert.deepEqual(all.map((o) => o.id).sort(), [...made].sort());
    });

    test('changes pages through the events in commit order', async () => {
      const page = await client.changes({ limit: 1000 });
      const ours = page.events.filter((e) => e.opportunity.id === created.id);
      assert.deepEqual(
        ours.map((e) => [e.type, e.opportunity.version]),
        [
          ['created', 1],
          ['updated', 2],
          ['archived', 3],
          ['restored', 4],
        ],
      );
      assert.ok(ours.every((e) => e.workspaceId === workspace && e.actor === service.user));
      const ids = page.events.map((e) => e.eventId);
      assert.deepEqual([...ids].sort(), ids);
      assert.equal(page.nextSince, ids.at(-1));
      const rest = await client.changes({ since: page.nextSince });
      assert.deepEqual(rest, { events: [], nextSince: page.nextSince });
      const one = await client.changes({ since: ours[0]?.eventId ?? '', limit: 1 });
      assert.equal(one.events.length, 1);
      assert.equal(one.events[0]?.opportunity.id, created.id);
      assert.equal(one.events[0]?.type, 'updated');
    });

    test('an idempotency key replays its call; with other params it is refused', async () => {
      const key = `key-${randomUUID()}`;
      const params: CreateOpportunityParams = {
        customerId: CUSTOMER,
        title: 'Access control, east wing',
        pipelineType: 'new_construction',
      };
      const first = await client.create(params, { idempotencyKey: key });
      const again = await client.create({ ...params, stage: 'lead' }, { idempotencyKey: key });
      assert.equal(again.id, first.id);
      assert.equal(again.version, 1);
      const reused = await rpcError(client.create({ ...params, title: 'Something else' }, { idempotencyKey: key }));
      assert.equal(reused.reason, 'idempotency_key_reused');
      // Without a key of the caller's, every call is a new logical call: a new key, a new row.
      const a = await client.create(params);
      const b = await client.create(params);
      assert.notEqual(a.id, b.id);
    });

    test('a token of several workspaces needs one named: the client option names it', async () => {
      const other = randomUUID();
      const token = service.token({ workspaces: [workspace, other] });
      const url = transport === 'http' ? service.httpUrl : service.wsUrl;
      const unnamed = new OpportunityClient({ url, token });
      const named = new OpportunityClient({ url, token, workspaceId: other });
      try {
        const error = await rpcError(unnamed.list());
        assert.equal(error.code, ErrorCodes.INVALID_PARAMS);
        assert.ok(error.fieldErrors['workspaceId']?.[0]?.startsWith('is required'), JSON.stringify(error.fieldErrors));
        const o = await named.create({ customerId: CUSTOMER, title: 'Fire alarm upgrade', pipelineType: 'other' });
        assert.equal(o.workspaceId, other);
        assert.deepEqual(
          (await named.list()).items.map((x) => x.id),
          [o.id],
        );
      } finally {
        await unnamed.close();
        await named.close();
      }
    });

    test('a token the service did not sign is refused', async () => {
      const url = transport === 'http' ? service.httpUrl : service.wsUrl;
      const forged = `${service.token().slice(0, -4)}AAAA`;
      const stranger = new OpportunityClient({ url, token: forged, retry: { attempts: 1 } });
      try {
        if (transport === 'http') {
          const error = await rpcError(stranger.list());
          assert.equal(error.code, ErrorCodes.UNAUTHORIZED);
          assert.equal(error.dataCode, 'UNAUTHORIZED');
        } else {
          // The handshake itself is refused with HTTP 401.
          await assert.rejects(stranger.list(), (error: unknown) => {
            assert.ok(error instanceof TransportError, String(error));
            assert.equal(error.status, 401);
            assert.equal(error.retryable, false);
            return true;
          });
        }
      } finally {
        await stranger.close();
      }
    });
  });
}
