#!/usr/bin/env node
// Bundles the client (src/index.ts) into one ES module for pages without a build step:
// examples/browser/opportunity-client.js, committed beside the page that loads it.
//
//   node scripts/bundle-browser.mjs           rewrite the bundle
//   node scripts/bundle-browser.mjs --check   exit 1 when the committed bundle is behind src/
//
// The `ws` package is left out: browsers have their own WebSocket, and the client only loads
// `ws` where there is none (Node before 22).

import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outputPath = resolve(packageDir, '../../examples/browser/opportunity-client.js');

const result = await build({
  absWorkingDir: packageDir,
  entryPoints: ['src/index.ts'],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  external: ['ws'],
  charset: 'utf8',
  legalComments: 'none',
  write: false,
  logLevel: 'warning',
  banner: {
    js: [
      '// opportunity-client, bundled for browsers from clients/typescript/src by',
      '// `npm run bundle:browser` (clients/typescript/scripts/bundle-browser.mjs). Do not edit.',
    ].join('\n'),
  },
});
const [file] = result.outputFiles;
const text = file.text;

const shown = relative(process.cwd(), outputPath) || outputPath;
if (process.argv.includes('--check')) {
  let committed = null;
  try {
    committed = readFileSync(outputPath, 'utf8');
  } catch {
    // missing: reported below
  }
  if (committed === text) {
    console.log(`check-bundle: ${shown} is current with src/`);
  } else {
    console.error(
      `check-bundle: ${shown} is ${committed === null ? 'missing' : 'behind src/'}: run \`npm run bundle:browser\` in clients/typescript`,
    );
    process.exitCode = 1;
  }
} else {
  writeFileSync(outputPath, text);
  console.log(`bundle-browser: wrote ${shown} (${text.length} bytes)`);
}
