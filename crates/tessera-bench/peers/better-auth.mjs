// Better Auth with its SQLite adapter (better-sqlite3), email and password sign-in, as its
// documentation sets it up; rate limiting off, so repeated sign-ins are never refused.
//   node better-auth.mjs PORT DATABASE_FILE plain|cookie-cache
// `cookie-cache` turns on Better Auth's session cookie cache (300 s): `get-session` then
// answers from a signed cookie without reading the database, and a revoked session stays
// valid until the cached cookie expires.
import http from "node:http";
import Database from "better-sqlite3";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";

const [port, databaseFile, mode] = process.argv.slice(2);
const origin = `http://127.0.0.1:${port}`;
const auth = betterAuth({
  database: new Database(databaseFile),
  baseURL: origin,
  secret: "peer-benchmark-secret-with-more-than-32-characters",
  emailAndPassword: { enabled: true },
  rateLimit: { enabled: false },
  session: mode === "cookie-cache" ? { cookieCache: { enabled: true, maxAge: 300 } } : {},
  trustedOrigins: [origin],
});
const { runMigrations } = await getMigrations(auth.options);
await runMigrations();
http.createServer(toNodeHandler(auth)).listen(Number(port), "127.0.0.1");
