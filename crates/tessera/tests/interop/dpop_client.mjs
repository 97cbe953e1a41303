// Drives tessera's DPoP-bound bearer tokens with npm's `dpop` (RFC 9449 proofs made by a
// library tessera's authors did not write): log in, use the token, refresh, use the new one;
// then what an attacker would try (the same proof twice, the token as a plain bearer token, a
// proof by another key, the refresh token without the key).
//
// Usage: TESSERA_URL=... TESSERA_USERNAME=... TESSERA_PASSWORD=... node dpop_client.mjs
//
// Prints one JSON object: the dpop version and, per key algorithm, each step's HTTP status
// and what the answers said. Fails (a non-zero exit) if `dpop` cannot be imported.
import { createRequire } from 'node:module';
import * as DPoP from 'dpop';

const { version } = createRequire(import.meta.url)('dpop/package.json');
const base = process.env.TESSERA_URL;
const credentials = {
  username: process.env.TESSERA_USERNAME,
  password: process.env.TESSERA_PASSWORD,
  delivery: 'bearer',
};

const post = (path, body, proof) =>
  fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(proof ? { DPoP: proof } : {}) },
    body: JSON.stringify(body),
  });
const session = (token, proof, scheme = 'DPoP') =>
  fetch(base + '/v1/session', {
    headers: { authorization: `${scheme} ${token}`, ...(proof ? { DPoP: proof } : {}) },
  });
const sessionProof = (keypair, token) =>
  DPoP.generateProof(keypair, base + '/v1/session', 'GET', undefined, token);
const code = async (response) => (await response.json()).code;

const report = { version, algorithms: {} };
for (const alg of ['ES256', 'Ed25519']) {
  const keypair = await DPoP.generateKeyPair(alg);
  const thief = await DPoP.generateKeyPair(alg);
  const steps = { jkt: await DPoP.calculateThumbprint(keypair.publicKey) };

  const login = await post('/v1/login', credentials,
    await DPoP.generateProof(keypair, base + '/v1/login', 'POST'));
  steps.login = login.status;
  const tokens = await login.json();
  steps.token_type = tokens.token_type;
  steps.access_token = tokens.access_token;

  const proof = await sessionProof(keypair, tokens.access_token);
  const used = await session(tokens.access_token, proof);
  steps.session = used.status;
  steps.username = (await used.json()).user?.username;
  const replayed = await session(tokens.access_token, proof);
  steps.replayed = [replayed.status, await code(replayed)];
  const bearer = await session(tokens.access_token, undefined, 'Bearer');
  steps.as_bearer = [bearer.status, bearer.headers.get('www-authenticate'), await code(bearer)];
  const stolen = await session(tokens.access_token, await sessionProof(thief, tokens.access_token));
  steps.other_key = [stolen.status, await code(stolen)];

  const withoutKey = await post('/v1/refresh', { refresh_token: tokens.refresh_token },
    await DPoP.generateProof(thief, base + '/v1/refresh', 'POST'));
  steps.refresh_other_key = [withoutKey.status, await code(withoutKey)];
  const refreshed = await post('/v1/refresh', { refresh_token: tokens.refresh_token },
    await DPoP.generateProof(keypair, base + '/v1/refresh', 'POST'));
  steps.refresh = refreshed.status;
  const renewed = await refreshed.json();
  steps.refreshed_token_type = renewed.token_type;
  steps.refreshed_access_token = renewed.access_token;
  const again = await session(renewed.access_token, await sessionProof(keypair, renewed.access_token));
  steps.session_after_refresh = again.status;

  report.algorithms[alg] = steps;
}
process.stdout.write(JSON.stringify(report));
