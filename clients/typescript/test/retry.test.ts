// Retries keep the idempotency key of their logical call, so that a write whose answer was lost
// is done once; and the client's method table agrees with the service's `rpc.discover`.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { parse } from 'yaml';

import { type FetchLike, METHODS, type MethodName, OpportunityClient, TransportError } from '../src/index.js';
import { CUSTOMER, repositoryRoot, Service } from './support/service.js';

interface Sent {
  readonly method: string;
  readonly params: { readonly idempotencyKey?: string; readonly title?: string };
}

/** The global fetch, recording every request; `loseAnswers` answers are lost after being sent. */
function recordingFetch(log: Sent[], loseAnswers: number): FetchLike {
  let toLose = loseAnswers;
  return async (input, init) => {
    log.push(JSON.parse(init.body) as Sent);
    const response = await fetch(input, init);
    if (toLose > 0) {
      toLose -= 1;
      // The service did the work; its answer never reaches the caller.
      await response.text();
      throw new TypeError('fetch failed: connection reset');
    }
    return response;
  };
}

describe('retries and idempotency keys', () => {
  let service: Service;

  before(async () => {
    service = await Service.start();
  });

  after(async () => {
    await service?.close();
  });

  test('a create whose answer was lost is retried with the same key and stored once', async () => {
    const sent: Sent[] = [];
    const client = new OpportunityClient({
      url: service.httpUrl,
      token: service.token(),
      fetch: recordingFetch(sent, 1),
      retry: { attempts: 3, initialDelayMs: 10 },
    });
    const title = `Lost answer ${Date.now()}`;
    const created = await client.create({ customerId: CUSTOMER, title, pipelineType: 'retrofit' });
    assert.equal(sent.length, 2, 'one attempt, one retry');
    const [first, retry] = sent;
    assert.equal(first?.method, 'opportunity.create');
    assert.match(
      first?.params.idempotencyKey ?? '',
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    assert.equal(retry?.params.idempotencyKey, first?.params.idempotencyKey);
    const stored = await client.list({ titleContains: title });
    assert.deepEqual(
      stored.items.map((o) => o.id),
      [created.id],
      'exactly one opportunity was stored',
    );
    const events = (await client.changes({ limit: 1000 })).events.filter((e) => e.opportunity.title === title);
    assert.equal(events.length, 1);
  });

  test('an update whose answer was lost is done once: the retry is not a version_mismatch', async () => {
    const plain = new OpportunityClient({ url: service.httpUrl, token: service.token() });
    const made = await plain.create({ customerId: CUSTOMER, title: 'Update once', pipelineType: 'other' });
    const sent: Sent[] = [];
    const client = new OpportunityClient({
      url: service.httpUrl,
      token: service.token(),
      fetch: recordingFetch(sent, 1),
      retry: { initialDelayMs: 10 },
    });
    const updated = await client.update({ id: made.id, expectedVersion: 1, title: 'Updated once' });
    assert.equal(updated.version, 2);
    assert.equal(sent.length, 2);
    assert.equal(sent[1]?.params.idempotencyKey, sent[0]?.params.idempotencyKey);
    assert.equal((await plain.get(made.id)).version, 2);
  });

  test('each logical call has a key of its own', async () => {
    const sent: Sent[] = [];
    const client = new OpportunityClient({
      url: service.httpUrl,
      token: service.token(),
      fetch: recordingFetch(sent, 0),
    });
    await client.create({ customerId: CUSTOMER, title: 'One', pipelineType: 'other' });
    await client.create({ customerId: CUSTOMER, title: 'One', pipelineType: 'other' });
    await client.list();
    assert.equal(sent.length, 3);
    assert.notEqual(sent[0]?.params.idempotencyKey, sent[1]?.params.idempotencyKey);
    assert.equal(sent[2]?.params.idempotencyKey, undefined, 'reads carry no key (the service refuses one)');
  });

  test('when every attempt fails, the last TransportError is thrown', async () => {
    let calls = 0;
    const client = new OpportunityClient({
      url: service.httpUrl,
      token: service.token(),
      retry: { attempts: 3, initialDelayMs: 1 },
      fetch: async () => {
        calls += 1;
        throw new TypeError('fetch failed: connection refused');
      },
    });
    await assert.rejects(client.list(), (error: unknown) => {
      assert.ok(error instanceof TransportError, String(error));
      assert.equal(error.retryable, true);
      assert.match(error.message, /connection refused/);
      return true;
    });
    assert.equal(calls, 3);
  });

  test('the method table matches rpc.discover and openapi/openapi.yaml: names, params, results', async () => {
    const client = new OpportunityClient({ url: service.httpUrl, token: service.token() });
    const document = await client.discover();
    assert.match(document.openrpc, /^1\.3\./);
    const description = parse(readFileSync(join(repositoryRoot, 'openapi/openapi.yaml'), 'utf8')) as {
      components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
    };
    const discovered = new Map(document.methods.map((m) => [m.name, m]));
    assert.deepEqual([...discovered.keys()].sort(), Object.keys(METHODS).sort(), 'the same methods');
    for (const [name, { params, result }] of Object.entries(METHODS) as [MethodName, (typeof METHODS)[MethodName]][]) {
      const method = discovered.get(name);
      assert.ok(method !== undefined);
      assert.deepEqual(method.result, { name: 'result', schema: { $ref: `#/components/schemas/${result}` } }, name);
      const paramNames = method.params.map((p) => (p as { name?: unknown }).name).sort();
      const described = Object.keys(description.components.schemas[params]?.properties ?? {}).sort();
      assert.ok(described.length > 0, `${params} has properties in openapi/openapi.yaml`);
      assert.deepEqual(paramNames, described, `${name}: the params of ${params}`);
    }
  });
});
