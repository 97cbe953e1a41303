// Runs the documented jose snippet (verify_jose.mjs, shown in docs/api-backends.md) on tokens.
//
// Usage: TESSERA_URL=... node run_jose.mjs < tokens.json
//
// Reads a JSON list of tokens on stdin and prints a JSON object: the jose version and, for
// each token, whether verifyAccessToken accepted it (with its sub) or why it refused it. Fails
// (a non-zero exit) if jose cannot be imported, so the calling test fails rather than skips.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { errors } from 'jose';
import { verifyAccessToken } from './verify_jose.mjs';

const require = createRequire(import.meta.url);
const { version } = require('jose/package.json');

const results = [];
for (const token of JSON.parse(readFileSync(0, 'utf8'))) {
  try {
    const claims = await verifyAccessToken(token);
    results.push({ valid: true, sub: claims.sub });
  } catch (error) {
    if (!(error instanceof errors.JOSEError)) throw error;
    results.push({ valid: false, error: `${error.code}: ${error.message}` });
  }
}
process.stdout.write(JSON.stringify({ version, results }));
