// The page's script: no build step; opportunity-client.js is the TypeScript client bundled by
// `npm run bundle:browser` in clients/typescript.
import { OpportunityClient } from './opportunity-client.js';

const form = document.getElementById('connect');
const stopButton = document.getElementById('stop');
const subscribeButton = document.getElementById('subscribe');
const statusLine = document.getElementById('status');
const list = document.getElementById('events');

let client;
let subscription;

function showStatus(state, text, error) {
  statusLine.dataset.state = state;
  if (error) statusLine.dataset.error = 'yes';
  else delete statusLine.dataset.error;
  statusLine.textContent = text;
}

function describeStatus(status) {
  switch (status.state) {
    case 'connecting':
      return 'Connecting…';
    case 'subscribed':
      return status.since
        ? `Subscribed again (subscription ${status.subscriptionId}), resuming after event ${status.since}.`
        : `Subscribed (subscription ${status.subscriptionId}); waiting for changes.`;
    case 'reconnecting':
      return `Connection lost (${status.error.message}); attempt ${status.attempt} in ${status.delayMs} ms.`;
    case 'paused':
      return `Paused: ${status.buffered} events wait to be shown.`;
    case 'closed':
      return status.error ? `Stopped: ${status.error.message}` : 'Stopped.';
    default:
      return status.state;
  }
}

function cell(className, text) {
  const span = document.createElement('span');
  span.className = className;
  span.textContent = text;
  return span;
}

function showEvent(event) {
  const o = event.opportunity;
  const item = document.createElement('li');
  item.dataset.eventId = event.eventId;
  const what = document.createElement('span');
  what.append(
    cell('title', o.title),
    document.createElement('br'),
    cell('meta', `${o.stage} · ${o.pipelineType} · version ${o.version}${o.archivedAt ? ' · archived' : ''}`),
  );
  item.append(cell('id', event.eventId), cell('type', event.type), what);
  list.prepend(item);
}

async function follow(current) {
  try {
    for await (const event of current) showEvent(event);
  } catch (error) {
    showStatus('closed', `Stopped: ${error.message}`, true);
  } finally {
    if (subscription === current) {
      subscribeButton.disabled = false;
      stopButton.disabled = true;
    }
  }
}

async function stop() {
  const [oldClient, oldSubscription] = [client, subscription];
  client = undefined;
  subscription = undefined;
  await oldSubscription?.close();
  await oldClient?.close();
  subscribeButton.disabled = false;
  stopButton.disabled = true;
}

form.addEventListener('submit', async (submit) => {
  submit.preventDefault();
  await stop();
  const data = new FormData(form);
  const workspaceId = String(data.get('workspace') ?? '').trim();
  try {
    client = new OpportunityClient({
      url: String(data.get('url')).trim(),
      token: String(data.get('token')).trim(),
      transport: 'websocket',
      ...(workspaceId ? { workspaceId } : {}),
    });
  } catch (error) {
    showStatus('closed', `Cannot connect: ${error.message}`, true);
    return;
  }
  subscription = client.subscribe(
    {},
    {
      onStatus: (status) => showStatus(status.state, describeStatus(status), status.state === 'closed' && status.error),
    },
  );
  subscribeButton.disabled = true;
  stopButton.disabled = false;
  follow(subscription);
});

stopButton.addEventListener('click', () => {
  stop();
});
