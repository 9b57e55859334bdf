// The OAuth2 token endpoint of the e2e tests: the npm package `oauth2-mock-server` (a real
// OAuth2 / OIDC server; version pinned by xtask/src/infra/oauth2.rs) on 127.0.0.1:<argv[2]>,
// token endpoint `/token`. The package issues a token to any client, so this launcher adds
// client authentication through its documented `beforeResponse` hook: the clients below, all
// with the secret in $FISO_OAUTH2_CLIENT_SECRET, sent with HTTP Basic or in the form (RFC 6749
// §2.3.1); anything else gets 401 `invalid_client` (§5.2). A client's id names its tokens'
// lifetime, and every token gets a fresh `jti`, so two fetches never yield the same token.
import { randomUUID } from "node:crypto";
import { OAuth2Server } from "oauth2-mock-server";

const port = Number(process.argv[2]);
const secret = process.env.FISO_OAUTH2_CLIENT_SECRET;
if (!port || !secret) {
  console.error("usage: FISO_OAUTH2_CLIENT_SECRET=... node server.mjs <port>");
  process.exit(2);
}

// Client id -> token lifetime in seconds (null: the answer has no `expires_in`).
const LIFETIMES = { "fiso-e2e": 3600, "fiso-e2e-short": 3, "fiso-e2e-no-expiry": null };

// application/x-www-form-urlencoded decoding of one Basic credential half.
const formDecode = (s) => decodeURIComponent(s.replace(/\+/g, " "));

function client(req) {
  const header = req.headers.authorization ?? "";
  if (header.toLowerCase().startsWith("basic ")) {
    const pair = Buffer.from(header.slice(6).trim(), "base64").toString("utf8");
    const colon = pair.indexOf(":");
    if (colon < 0) return {};
    return { id: formDecode(pair.slice(0, colon)), secret: formDecode(pair.slice(colon + 1)) };
  }
  return { id: req.body?.client_id, secret: req.body?.client_secret };
}

const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");

server.service.on("beforeTokenSigning", (token, req) => {
  const lifetime = LIFETIMES[client(req).id];
  token.payload.jti = randomUUID();
  token.payload.exp = token.payload.iat + (lifetime ?? 3600);
});

server.service.on("beforeResponse", (response, req) => {
  const { id, secret: given } = client(req);
  const style = (req.headers.authorization ?? "").toLowerCase().startsWith("basic ") ? "basic" : "form";
  if (!(id in LIFETIMES) || given !== secret) {
    console.log(JSON.stringify({ token_request: "refused", client_id: id ?? null, style }));
    response.statusCode = 401;
    response.body = { error: "invalid_client", error_description: "client authentication failed" };
    return;
  }
  const lifetime = LIFETIMES[id];
  if (lifetime === null) delete response.body.expires_in;
  else response.body.expires_in = lifetime;
  console.log(JSON.stringify({ token_request: "issued", client_id: id, style, expires_in: lifetime }));
});

await server.start(port, "127.0.0.1");
console.log(`oauth2-mock-server listening on http://127.0.0.1:${port}/token`);
