// The real service binary for the browser test: started on 127.0.0.1 (a free port) with a
// SQLite database in a temp directory; tokens minted by its own `token` subcommand.

import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const SECRET = 'browser-example-test-secret-0123456789abcdef';

/** $BIN, else target/release/opportunity-service; a clear failure when it is missing. */
export function serviceBinary() {
  const bin = process.env.BIN ? resolve(process.env.BIN) : join(repositoryRoot, 'target/release/opportunity-service');
  if (!existsSync(bin)) {
    throw new Error(
      `the service binary ${bin} does not exist: build it with \`cargo build --release\` in ${repositoryRoot}, ` +
        'or name another one with BIN=/path/to/opportunity-service',
    );
  }
  return bin;
}

/** Starts the service with `extraEnv` added; resolves once it logs where it listens. */
export async function startService(extraEnv = {}) {
  const bin = serviceBinary();
  const dir = mkdtempSync(join(tmpdir(), 'opportunity-browser-test-'));
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    DATABASE_URL: `sqlite://${join(dir, 't.db')}`,
    AUTH_JWT_SECRET: SECRET,
    ...extraEnv,
  };
  const child = spawn(bin, ['serve'], {
    env: { ...env, LISTEN_ADDR: '127.0.0.1:0' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  const port = await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`the service did not start within 20 s:\n${output}`)), 20_000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      output += chunk;
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolvePromise(Number(match[1]));
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the service exited (${code ?? signal}) before listening:\n${output}`));
    });
  });
  const workspace = randomUUID();
  return {
    port,
    workspace,
    httpUrl: `http://127.0.0.1:${port}/`,
    wsUrl: `ws://127.0.0.1:${port}/`,
    output: () => output,
    token(workspaces = [workspace]) {
      const args = ['token'];
      for (const w of workspaces) args.push('--workspace', w);
      return execFileSync(bin, args, {
        env,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      }).trim();
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        await new Promise((done) => {
          const kill = setTimeout(() => child.kill('SIGKILL'), 5_000);
          child.once('exit', () => {
            clearTimeout(kill);
            done();
          });
          child.kill('SIGTERM');
        });
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
