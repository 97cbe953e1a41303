// Better Auth's own password check (scrypt through node:crypto), timed one after another:
// the hash limit its sign-in is compared with.   node scrypt-limit.mjs COUNT
import { hashPassword, verifyPassword } from "better-auth/crypto";

const count = Number(process.argv[2] ?? 20);
const password = "peer password 1";
const hash = await hashPassword(password);
await verifyPassword({ hash, password });
const started = performance.now();
for (let i = 0; i < count; i++) {
  if (!(await verifyPassword({ hash, password }))) throw new Error("the password did not verify");
}
console.log(JSON.stringify({ verify_ms: (performance.now() - started) / count }));
