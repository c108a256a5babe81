// The real service binary, started for a test on 127.0.0.1 with a SQLite database in a temp
// directory, and the tokens it accepts (minted by its own `token` subcommand).

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root (this file is build/test/support/service.js in the package). */
export const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../..');

/** The service binary: $BIN, else target/release/opportunity-service; a clear failure when missing. */
export function serviceBinary(): string {
  const bin = process.env['BIN']
    ? resolve(process.env['BIN'])
    : join(repositoryRoot, 'target/release/opportunity-service');
  if (!existsSync(bin)) {
    throw new Error(
      `the service binary ${bin} does not exist: build it with \`cargo build --release\` in ${repositoryRoot}, ` +
        'or name another one with BIN=/path/to/opportunity-service',
    );
  }
  return bin;
}

/** The secret the service checks tokens with, and `token` signs with (32 bytes or more). */
const SECRET = 'typescript-client-test-secret-0123456789abcdef';

export interface TokenOptions {
  /** Workspaces of the token (default: the service's `workspace`). */
  readonly workspaces?: readonly string[];
  readonly user?: string;
  readonly scope?: string;
  readonly ttl?: string;
}

/** One running service process, restartable on the same database and port. */
export class Service {
  /** The first workspace tests act in. */
  readonly workspace = randomUUID();
  readonly user = randomUUID();
  private readonly bin: string;
  private readonly dir: string;
  private readonly extraEnv: Record<string, string>;
  private child: ChildProcess | undefined;
  private log = '';
  private port = 0;

  private constructor(extraEnv: Record<string, string>) {
    this.bin = serviceBinary();
    this.dir = mkdtempSync(join(tmpdir(), 'opportunity-client-test-'));
    this.extraEnv = extraEnv;
  }

  /** Starts the service on 127.0.0.1, on a free port. */
  static async start(extraEnv: Record<string, string> = {}): Promise<Service> {
    const service = new Service(extraEnv);
    try {
      await service.launch();
    } catch (error) {
      service.cleanup();
      throw error;
    }
    return service;
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}/`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/`;
  }

  /** What the service wrote on stderr so far. */
  get output(): string {
    return this.log;
  }

  private env(): NodeJS.ProcessEnv {
    return {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      DATABASE_URL: `sqlite://${join(this.dir, 't.db')}`,
      AUTH_JWT_SECRET: SECRET,
      RUST_LOG: process.env['SERVICE_RUST_LOG'] ?? 'info',
      ...this.extraEnv,
    };
  }

  /** Starts the process: on the port it had before, or on a free one the first time. */
  private launch(): Promise<void> {
    const child = spawn(this.bin, ['serve'], {
      env: { ...this.env(), LISTEN_ADDR: `127.0.0.1:${this.port}` },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    return new Promise((resolvePromise, reject) => {
      let seen = '';
      const timer = setTimeout(() => {
        reject(new Error(`the service did not say where it listens within 20 s; its output:\n${seen}`));
      }, 20_000);
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (chunk: string) => {
        seen += chunk;
        this.log += chunk;
        const match = /listening on 127\.0\.0\.1:(\d+)/.exec(seen);
        if (match?.[1] !== undefined && this.port === 0) this.port = Number(match[1]);
        if (match !== null) {
          clearTimeout(timer);
          resolvePromise();
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the service exited (${code ?? signal}) before listening; its output:\n${seen}`));
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  /** A token for `workspaces` signed with the service's secret, by `opportunity-service token`. */
  token(options: TokenOptions = {}): string {
    const args = ['token'];
    for (const workspace of options.workspaces ?? [this.workspace]) args.push('--workspace', workspace);
    args.push('--user', options.user ?? this.user);
    if (options.scope !== undefined) args.push('--scope', options.scope);
    if (options.ttl !== undefined) args.push('--ttl', options.ttl);
    const out = execFileSync(this.bin, args, { env: this.env(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const token = out.trim();
    if (token.split('.').length !== 3) throw new Error(`\`token\` printed no JWT: ${JSON.stringify(out)}`);
    return token;
  }

  /** Stops the process (SIGTERM, then SIGKILL after 5 s); the database stays. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolvePromise) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), 5_000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolvePromise();
      });
      child.kill('SIGTERM');
    });
  }

  /** Stops the process and starts it again on the same database and port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  /** Stops the process and removes its database. */
  async close(): Promise<void> {
    await this.stop();
    this.cleanup();
  }

  private cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Polls `check` until it holds, or fails after `ms`. */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** `promise`, or a failure naming `what` after `ms`. */
export function within<T>(what: string, promise: Promise<T>, ms = 5_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A customer id for creates. */
export const CUSTOMER = '550e8400-e29b-41d4-a716-446655440000';
