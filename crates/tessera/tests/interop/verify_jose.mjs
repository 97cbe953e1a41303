// Verifies tessera access tokens with jose: npm install jose
import { createRemoteJWKSet, jwtVerify } from 'jose';

const TESSERA_URL = process.env.TESSERA_URL ?? 'http://127.0.0.1:8080'; // its public base URL
const ISSUER = process.env.TESSERA_ISSUER ?? 'tessera'; // tessera's `issuer` setting
const AUDIENCE = process.env.TESSERA_AUDIENCE ?? 'tessera'; // tessera's `audience` setting

// Fetched at the first token, again after 60 s, and when a token names a kid it lacks
// (at most every 30 s).
const jwks = createRemoteJWKSet(new URL(`${TESSERA_URL}/.well-known/jwks.json`), {
  cacheMaxAge: 60_000,
});

/** The token's claims; throws (a jose JOSEError) when the token is to be refused. */
export async function verifyAccessToken(token) {
  const { payload } = await jwtVerify(token, jwks, {
    algorithms: ['EdDSA', 'ES256'], // what tessera signs with, never HS256 or "none"
    typ: 'at+jwt', // an access token, not a refresh token or another JWT
    issuer: ISSUER,
    audience: AUDIENCE,
    clockTolerance: 30,
    requiredClaims: ['iss', 'aud', 'sub', 'sid', 'name', 'roles', 'perms', 'iat', 'nbf', 'exp', 'jti'],
  });
  return payload;
}
