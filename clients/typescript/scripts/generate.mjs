#!/usr/bin/env node
// Writes src/generated.ts: one TypeScript type per schema of `components.schemas` in
// openapi/openapi.yaml (the service's machine-readable description, also the source of the
// OpenRPC document that `rpc.discover` answers), through json-schema-to-typescript.
//
//   node scripts/generate.mjs           rewrite src/generated.ts
//   node scripts/generate.mjs --check   generate into a temp file; exit 1 when it differs from
//                                       the committed src/generated.ts (CI: types are current)
//
// What TypeScript cannot say is left out, on purpose and visibly:
// - `if`/`then`/`else` and `not` (the rules across fields, such as "probability is 100 when
//   stage is won"): the service checks them and reports them as field errors;
// - `pattern`, `minimum`, `maxLength`, …: json-schema-to-typescript turns some into JSDoc tags.
// A `$ref` with sibling keywords (OpenAPI 3.1 allows `description` or `default` beside it) is
// emitted as the referenced type's name with the siblings' description as its comment, so that
// the named type is reused instead of copied (`Stage1`, `Uuid2`, …).
// Besides one type per schema, the output has `ComponentSchemas`: every schema by its name.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { compile } from 'json-schema-to-typescript';
import { parse } from 'yaml';

const here = dirname(fileURLToPath(import.meta.url));
const packageDir = resolve(here, '..');
const openapiPath = resolve(packageDir, '../../openapi/openapi.yaml');
const outputPath = resolve(packageDir, 'src/generated.ts');

const SCHEMA_PREFIX = '#/components/schemas/';
/** Keywords TypeScript types cannot express; dropped everywhere. */
const CONDITIONALS = new Set(['if', 'then', 'else', 'not']);
/** The root that makes json-schema-to-typescript emit every schema: a map of them by name. */
const ROOT = 'ComponentSchemas';
const ROOT_DESCRIPTION =
  'Every schema of `components.schemas` by its name, so that code can name a type by the name the\n' +
  'description uses (`ComponentSchemas["Opportunity"]`), as `rpc.discover` does.';

function fail(message) {
  console.error(`generate: ${message}`);
  process.exit(1);
}

/** `#/components/schemas/X` → X, or a failure for any other ref. */
function refName(ref) {
  if (!ref.startsWith(SCHEMA_PREFIX)) fail(`unsupported $ref ${JSON.stringify(ref)} (only ${SCHEMA_PREFIX}…)`);
  return ref.slice(SCHEMA_PREFIX.length);
}

/** The schema as json-schema-to-typescript should see it. */
function prepare(schema, names) {
  if (Array.isArray(schema)) return schema.map((item) => prepare(item, names));
  if (schema === null || typeof schema !== 'object') return schema;
  if (typeof schema.$ref === 'string') {
    const name = refName(schema.$ref);
    if (!names.has(name)) fail(`$ref to a missing schema: ${schema.$ref}`);
    const siblings = Object.keys(schema).filter((k) => k !== '$ref');
    if (siblings.length === 0) return { $ref: `#/$defs/${name}` };
    // Keep the name (tsType) and the comment; json-schema-to-typescript would otherwise copy
    // the referenced schema under a numbered name.
    const out = { tsType: name };
    if (typeof schema.description === 'string') out.description = schema.description;
    return out;
  }
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (CONDITIONALS.has(key)) continue;
    if (key === 'allOf') {
      // An `allOf` made of conditionals only (Opportunity, JsonRpcError) says nothing more.
      const kept = value.map((item) => prepare(item, names)).filter((item) => Object.keys(item).length > 0);
      if (kept.length > 0) out.allOf = kept;
      continue;
    }
    if (key === 'examples' || key === 'example') continue;
    out[key] = prepare(value, names);
  }
  return out;
}

async function generate() {
  const document = parse(readFileSync(openapiPath, 'utf8'));
  const schemas = document?.components?.schemas;
  if (!schemas || typeof schemas !== 'object') fail(`${openapiPath} has no components.schemas`);
  const names = new Set(Object.keys(schemas));
  const defs = {};
  for (const [name, schema] of Object.entries(schemas)) defs[name] = prepare(schema, names);
  const root = {
    title: ROOT,
    description: ROOT_DESCRIPTION,
    type: 'object',
    additionalProperties: false,
    required: [...names],
    properties: Object.fromEntries([...names].map((name) => [name, { $ref: `#/$defs/${name}` }])),
    $defs: defs,
  };
  let ts = await compile(root, ROOT, {
    bannerComment: '',
    additionalProperties: false,
    strictIndexSignatures: true,
    unreachableDefinitions: true,
    // A one-element array of params stays the tuple `[Params]`; an array with a larger bound
    // (a filter's `maxItems`) stays an array, not a union of tuples of every length.
    maxItems: 1,
    format: true,
    style: { printWidth: 110, singleQuote: true },
  });

  // Each type's comment would name the root again; the root's own comment says it once.
  ts = ts.replace(
    new RegExp(
      ` \\* This interface was referenced by \`${ROOT}\`'s JSON-Schema\\n \\* via the \`definition\` "\\w+"\\.\\n`,
      'g',
    ),
    '',
  );
  // Comments left empty, or ending in blank lines, by that removal.
  ts = ts
    .replace(/\n( *)\*(?:\n\1\*)+(?=\n)/g, '\n$1*') // runs of blank comment lines: one
    .replace(/\n( *)\*\n\1\*\//g, '\n$1*/') // a blank line before the end of a comment
    .replace(/(^|\n)( *)\/\*\*\n\2 \*\/(?=\n)/g, '') // comments left empty
    .replace(/\n{3,}/g, '\n\n');
  if (!new RegExp(`^export interface ${ROOT} \\{$`, 'm').test(ts)) fail(`no ${ROOT} interface was emitted`);
  if (ts.includes('This interface was referenced by')) fail('a note naming the root is left in the output');
  for (const name of names) {
    if (!new RegExp(`^export (?:type|interface) ${name}\\b`, 'm').test(ts)) fail(`no type was emitted for ${name}`);
  }
  const numbered = ts.match(/^export (?:type|interface) (\w+?\d+)\b/m);
  if (numbered) fail(`a schema was copied under a numbered name: ${numbered[1]}`);

  const source = relative(packageDir, openapiPath).split('\\').join('/');
  const banner = [
    '// Generated by scripts/generate.mjs from components.schemas of openapi/openapi.yaml.',
    `// (${source} from this package.) Do not edit: change the description, then run`,
    '// `npm run generate`; `npm run check-generated` fails while this file is behind it.',
    '// Rules across fields (if/then/else) and value constraints are not types: the service checks them.',
    '',
  ].join('\n');
  return `${banner}\n${ts.trimStart()}`;
}

const check = process.argv.includes('--check');
const text = await generate();
if (!check) {
  writeFileSync(outputPath, text);
  console.log(`generate: wrote ${relative(process.cwd(), outputPath) || outputPath}`);
} else {
  const dir = mkdtempSync(join(tmpdir(), 'opportunity-client-generated-'));
  const fresh = join(dir, 'generated.ts');
  try {
    writeFileSync(fresh, text);
    let committed = null;
    try {
      committed = readFileSync(outputPath, 'utf8');
    } catch {
      // missing: reported below
    }
    if (committed === text) {
      console.log('check-generated: src/generated.ts is current with openapi/openapi.yaml');
    } else {
      console.error(
        committed === null
          ? 'check-generated: src/generated.ts is missing'
          : 'check-generated: src/generated.ts differs from what openapi/openapi.yaml gives:',
      );
      if (committed !== null) {
        try {
          execFileSync('diff', ['-u', outputPath, fresh], { stdio: 'inherit' });
        } catch {
          // diff exits 1 when the files differ (or is missing); its output is what matters
        }
      }
      console.error('check-generated: run `npm run generate` in clients/typescript and commit the result');
      process.exitCode = 1;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
