// A small static file server for the page, on 127.0.0.1 only.
//
//   node test/static-server.mjs [PORT]    serves examples/browser/ (default port 5173)
//
// Start the service with CORS_ALLOWED_ORIGINS=http://127.0.0.1:PORT so that it accepts the
// page's WebSocket (browsers send their page's origin with the handshake).

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
};

/** The page's directory, examples/browser/. */
export const pageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Serves the files under `root` (GET and HEAD); resolves to its URL and a close function. */
export function startStaticServer(root = pageRoot, port = 0) {
  const server = createServer(async (request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? '/', 'http://127.0.0.1').pathname);
    const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
    const inside =
      file.startsWith(root + sep) && !file.includes(`${sep}node_modules${sep}`) && !file.includes(`${sep}test${sep}`);
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    const info = inside ? await stat(file).catch(() => null) : null;
    if (!info?.isFile()) {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    response.writeHead(200, {
      'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
      'Content-Length': info.size,
      'Cache-Control': 'no-store',
    });
    if (request.method === 'HEAD') response.end();
    else createReadStream(file).pipe(response);
  });
  return new Promise((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const { port: actual } = server.address();
      const origin = `http://127.0.0.1:${actual}`;
      resolvePromise({
        origin,
        url: `${origin}/`,
        close: () => new Promise((done) => server.close(() => done())),
      });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? 5173);
  const { url, origin } = await startStaticServer(pageRoot, port);
  console.log(`serving ${pageRoot} at ${url}`);
  console.log(`start the service with CORS_ALLOWED_ORIGINS=${origin}`);
}
