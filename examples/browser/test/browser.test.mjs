// The page in headless Chromium (Debian's /usr/bin/chromium, driven by puppeteer-core) against
// the real service binary: the page subscribes over WebSocket with the token as `access_token`,
// a create is made with plain HTTP, and its title must show on the page within seconds.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import puppeteer from 'puppeteer-core';

import { startService } from './service.mjs';
import { startStaticServer } from './static-server.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CUSTOMER = '550e8400-e29b-41d4-a716-446655440000';

/** A create over plain HTTP, as any other caller would make it. */
async function createOverHttp(service, token, title, workspaceId) {
  const response = await fetch(service.httpUrl, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      Authorization: `Bearer ${token}`,
      ...(workspaceId ? { 'X-Workspace-Id': workspaceId } : {}),
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'opportunity.create',
      params: { customerId: CUSTOMER, title, pipelineType: 'retrofit' },
    }),
  });
  const answer = await response.json();
  assert.equal(answer.error, undefined, JSON.stringify(answer.error));
  assert.equal(answer.result.title, title);
  return answer.result;
}

describe('the browser example', () => {
  let pages;
  let service;
  let browser;
  let page;
  const problems = [];

  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `no Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium) or set CHROMIUM`,
      );
    }
    pages = await startStaticServer();
    // Browsers send the page's origin with the WebSocket handshake; the service accepts only
    // the origins it is told to.
    service = await startService({ CORS_ALLOWED_ORIGINS: pages.origin });
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--no-first-run',
        '--no-default-browser-check',
      ],
    });
    page = await browser.newPage();
    page.on('console', (message) => {
      // Chromium names the handshake URL, token included, when a WebSocket fails: not that.
      const text = message.text().replace(/access_token=[^&\s'"]+/g, 'access_token=…');
      if (message.type() === 'error') problems.push(`console: ${text}`);
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  });

  after(async () => {
    await browser?.close();
    await service?.close();
    await pages?.close();
  });

  async function subscribe(url, token, workspace = '') {
    await page.goto(pages.url, { waitUntil: 'load' });
    await page.$eval(
      '#url',
      (input, value) => {
        input.value = value;
      },
      url,
    );
    await page.type('#token', token);
    if (workspace) await page.type('#workspace', workspace);
    await page.click('#subscribe');
    try {
      await page.waitForFunction(() => document.getElementById('status').dataset.state === 'subscribed', {
        timeout: 10_000,
      });
    } catch (error) {
      const status = await page.$eval('#status', (s) => s.textContent);
      throw new Error(
        `the page did not subscribe: "${status}" ${problems.join('; ')}\nservice log:\n${service.output()}`,
        { cause: error },
      );
    }
  }

  async function waitForTitle(title, ms = 5_000) {
    try {
      await page.waitForFunction(
        (t) => document.getElementById('events').textContent.includes(t),
        { timeout: ms },
        title,
      );
    } catch (error) {
      const shown = await page.$eval('#events', (list) => list.textContent);
      throw new Error(`"${title}" did not show within ${ms} ms; the page shows: "${shown}"`, { cause: error });
    }
  }

  test('a create made over HTTP shows on the page as it arrives', async () => {
    const token = service.token();
    await subscribe(service.wsUrl, token);
    const title = `Chiller retrofit, Building ${randomUUID().slice(0, 8)}`;
    const created = await createOverHttp(service, token, title);
    await waitForTitle(title);
    const row = await page.$eval('#events li', (item) => ({
      eventId: item.dataset.eventId,
      text: item.textContent,
    }));
    assert.match(row.eventId, /^\d{20}$/);
    assert.match(row.text, /created/);
    assert.match(row.text, new RegExp(`version ${created.version}`));
    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    assert.deepEqual(problems, []);
  });

  test('an http:// URL works too, and the workspace field picks the workspace', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    const token = service.token([a, b]);
    await subscribe(service.httpUrl, token, b);
    const inA = `Not shown: workspace A ${randomUUID().slice(0, 8)}`;
    const inB = `Shown: workspace B ${randomUUID().slice(0, 8)}`;
    await createOverHttp(service, token, inA, a);
    await createOverHttp(service, token, inB, b);
    await waitForTitle(inB);
    // Events come in commit order: A's would have come before B's.
    const shown = await page.$eval('#events', (list) => list.textContent);
    assert.ok(!shown.includes(inA), shown);
    assert.deepEqual(problems, []);
  });
});
