// Express with express-session and its default in-memory store: a login that marks the session
// and a check that reads it (no password: express-session has no login of its own).
//   node express-session.mjs PORT
import express from "express";
import session from "express-session";

const [port] = process.argv.slice(2);
const app = express();
app.use(
  session({
    secret: "peer-benchmark-secret-with-more-than-32-characters",
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: "lax" },
  }),
);
app.post("/login", (req, res) => {
  req.session.user = { id: "alice", roles: ["user"] };
  res.send("ok");
});
app.get("/session", (req, res) => {
  if (req.session.user) res.send("ok");
  else res.status(401).send("no session");
});
app.listen(Number(port), "127.0.0.1");
