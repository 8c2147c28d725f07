"use strict";
/**
 * authsvc in a Node.js web stack: `bearerAuth` checks `Authorization: Bearer <token>` on every request, and
 * `tokenProvider` is the route a chat client gets its token from (and a fresh one when its token EXPIRED).
 * Both are connect-style `(req, res, next)` handlers: Express, Connect, or plain `http` (next is optional for
 * tokenProvider). They need no Express. The HTTP contract (statuses, WWW-Authenticate, JSON bodies) is the one of
 * the Python package (authsvc.web), word for word: docs/web.md in the repository.
 *
 *   app.all("/auth/token", tokenProvider({ client, identify: (req) => sessionUser(req) }));
 *   app.use(bearerAuth({ verifier: client, exclude: ["/healthz"] }));
 *   app.get("/messages", (req, res) => res.json({ user: req.authsvc.userId }));
 *
 * Nothing here logs, and no token is ever put in an answer.
 */

const DEFAULT_REALM = "api";
const DEFAULT_RETRY_AFTER = 2;
// RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const BEARER = /^bearer(?: +([\s\S]*))?$/i;
// The codes under which authsvc could not answer in time: the request may succeed later.
const UNAVAILABLE_CODES = new Set(["UNAVAILABLE", "DEADLINE_EXCEEDED"]);

/** What each verdict other than VALID means for a client. Only EXPIRED is worth a refresh. */
const DESCRIPTIONS = Object.freeze({
  EXPIRED: "the token has expired; fetch a fresh one from the token provider and retry",
  REVOKED: "the token was revoked; log the user out",
  INVALID_SIGNATURE: "the token signature does not verify; log the user out",
  UNKNOWN_KEY: "the token names a key this app does not have; log the user out",
  MALFORMED: "the token is not a well-formed token of this app; log the user out",
  NOT_YET_VALID: "the token is not valid yet; retry later with the same token",
  WRONG_AUDIENCE: "the token is for another app; log the user out",
});
const OTHER_DESCRIPTION = "the token was not accepted; log the user out";
// A 401's action: the verdict's clientAction (decided by the token rules); anything else logs out (fail closed).
const CLIENT_ACTIONS = Object.freeze({ REFRESH: "refresh", LOGOUT: "logout", RETRY_LATER: "retry_later" });

function error(code, description, action, outcome = null) {
  return { error: code, error_description: description, outcome, action };
}

function challenge(realm, code, description) {
  // RFC 6750 §3: realm, then error and error_description as quoted strings (printable ASCII, no " or \).
  const parts = [`realm="${realm}"`];
  if (code !== undefined) parts.push(`error="${code}"`);
  if (description !== undefined) parts.push(`error_description="${description}"`);
  return ["www-authenticate", `Bearer ${parts.join(", ")}`];
}

function missingToken(realm) {
  const description = "this request needs an Authorization: Bearer token";
  return { status: 401, body: error("missing_token", description, "authenticate"), headers: [challenge(realm)] };
}

function invalidRequest(realm, description) {
  return {
    status: 400,
    body: error("invalid_request", description, "fix_request"),
    headers: [challenge(realm, "invalid_request", description)],
  };
}

function rejected(verification, realm) {
  const outcome = verification.outcome;
  const description = `${outcome}: ${DESCRIPTIONS[outcome] || OTHER_DESCRIPTION}`;
  const action = (Object.hasOwn(CLIENT_ACTIONS, verification.clientAction) && CLIENT_ACTIONS[verification.clientAction]) || "logout";
  return {
    status: 401,
    body: error("invalid_token", description, action, outcome),
    headers: [challenge(realm, "invalid_token", description)],
  };
}

function unavailable(retryAfter, outcome = null) {
  const description = "authsvc cannot answer right now; retry later";
  return {
    status: 503,
    body: error("temporarily_unavailable", description, "retry", outcome),
    headers: [["retry-after", String(retryAfter)]],
  };
}

function serverError(description) {
  return { status: 500, body: error("server_error", description, "retry"), headers: [] };
}

/** Sends one answer of the contract; never cached (it is about a token, or carries one). */
function send(res, { status, body, headers }) {
  const encoded = Buffer.from(JSON.stringify(body));
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.setHeader("cache-control", "no-store");
  for (const [name, value] of headers) res.setHeader(name, value);
  res.setHeader("content-length", encoded.length);
  res.end(encoded);
}

/** Every value of the request's Authorization header (Node keeps only the first in req.headers). */
function authorizationValues(req) {
  if (Array.isArray(req.rawHeaders)) {
    const values = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      if (req.rawHeaders[i].toLowerCase() === "authorization") values.push(req.rawHeaders[i + 1]);
    }
    return values;
  }
  const value = req.headers && req.headers.authorization;
  return value === undefined ? [] : [value];
}

/**
 * The bearer token of a request whose Authorization header(s) are `values` ({ token }), the 400 answer for a
 * malformed header ({ answer }), or {} when the request carries no bearer credentials at all (no header, or
 * another scheme such as Basic).
 */
function bearerCredentials(values, realm) {
  if (values.length === 0) return {};
  if (values.length > 1) return { answer: invalidRequest(realm, "send one Authorization header, not several") };
  const match = BEARER.exec(values[0].replace(/^[ \t]+|[ \t]+$/g, ""));
  if (match === null) return {}; // another scheme (Basic, ...): no bearer credentials
  const token = match[1];
  if (!token) return { answer: invalidRequest(realm, "the Authorization header has no token after Bearer") };
  if (!B64TOKEN.test(token)) {
    return { answer: invalidRequest(realm, "the Authorization header must hold exactly one token after Bearer") };
  }
  return { token };
}

/**
 * The VALID verdict on the request's bearer token ({ verification }) or the answer refusing it ({ answer }); a
 * verifier's own error (not an AuthsvcClientError) is thrown. Fails closed. Without bearer credentials: 401
 * missing_token with no verifier call, or, with `allowAnonymous`, the verdict on the empty token: VALID with role
 * ANONYMOUS passes, anything else (ANONYMOUS_DISABLED) is the same 401 missing_token. The twin of
 * authsvc.web.contract.authenticate.
 */
async function authenticate(verify, values, { realm, retryAfterSeconds, allowAnonymous, onError }) {
  const { token, answer } = bearerCredentials(values, realm);
  if (answer) return { answer };
  if (token === undefined && !allowAnonymous) return { answer: missingToken(realm) };
  let verification;
  try {
    verification = await verify(token ?? "");
  } catch (error) {
    if (!isClientError(error)) throw error;
    return { answer: failedCall(error, retryAfterSeconds, "the backend could not verify the token", onError) };
  }
  if (verification.outcome === "UNAVAILABLE") return { answer: unavailable(retryAfterSeconds, "UNAVAILABLE") };
  const valid = Boolean(verification.valid) && verification.outcome === "VALID";
  if (token === undefined) {
    // The empty token: only an anonymous user passes; ANONYMOUS_DISABLED (or anything else) asks to sign in.
    return valid && verification.role === "ANONYMOUS" ? { verification } : { answer: missingToken(realm) };
  }
  return valid ? { verification } : { answer: rejected(verification, realm) };
}

function isClientError(error) {
  return error instanceof Error && error.name === "AuthsvcClientError";
}

function failedCall(error, retryAfter, description, onError) {
  if (onError) onError(error);
  return UNAVAILABLE_CODES.has(error.codeName) ? unavailable(retryAfter) : serverError(description);
}

function checkRealm(realm) {
  if (typeof realm !== "string" || !/^[\x20-\x7e]+$/.test(realm) || /["\\]/.test(realm)) {
    throw new TypeError("realm must be printable ASCII without quotes or backslashes");
  }
  return realm;
}

function requestPath(req) {
  return String(req.originalUrl || req.url || "").split("?", 1)[0];
}

/**
 * Middleware: every request needs `Authorization: Bearer <token>` with a VALID verdict of `verifier`, except the
 * paths in `exclude` (exact paths, without the query). A VALID verdict goes on as `req.authsvc`; anything else is
 * answered here: 401 (action "refresh" on EXPIRED, "retry_later" on NOT_YET_VALID, "logout" otherwise), 400, or 503 with Retry-After when the
 * verifier cannot vouch (fail closed). `onError(error)` hears of each failed RPC (an AuthsvcClientError).
 * With `allowAnonymous` (default false), a request without bearer credentials is verified as the empty token: for
 * an app with anonymous access on it goes on with `req.authsvc` of role "ANONYMOUS" (userId null); else it gets
 * the same 401 missing_token as without the option.
 *
 * @param {object} options
 * @param {{verify(token: string): any} | {verifyToken(token: string): Promise<any>}} options.verifier
 *   a LocalVerifier (its `verify`, sync or async) or an AuthClient (its `verifyToken`, the VerifyToken RPC)
 */
function bearerAuth({
  verifier,
  realm = DEFAULT_REALM,
  exclude = [],
  retryAfterSeconds = DEFAULT_RETRY_AFTER,
  onError,
  allowAnonymous = false,
} = {}) {
  const verify = verifierOf(verifier);
  checkRealm(realm);
  if (typeof allowAnonymous !== "boolean") throw new TypeError("allowAnonymous must be true or false");
  const excluded = new Set(exclude);
  const options = { realm, retryAfterSeconds, allowAnonymous, onError };
  return async function authsvcBearerAuth(req, res, next) {
    if (excluded.has(requestPath(req))) return next();
    let verdict;
    try {
      verdict = await authenticate(verify, authorizationValues(req), options);
    } catch (error) {
      return next(error); // the verifier's own bug: the app's error handling
    }
    if (verdict.answer) return send(res, verdict.answer);
    req.authsvc = verdict.verification;
    return next();
  };
}

function verifierOf(verifier) {
  if (verifier && typeof verifier.verify === "function") return (token) => verifier.verify(token);
  if (verifier && typeof verifier.verifyToken === "function") return (token) => verifier.verifyToken(token);
  throw new TypeError("verifier must be a LocalVerifier or an AuthClient (an object with verify or verifyToken)");
}

function refuseTokenRequest(req, allowedOrigins) {
  if (req.method !== "POST") {
    return {
      status: 405,
      body: error("method_not_allowed", "the token provider answers POST only", "fix_request"),
      headers: [["allow", "POST"]],
    };
  }
  const contentType = req.headers["content-type"];
  if (contentType === undefined || contentType.split(";", 1)[0].trim().toLowerCase() !== "application/json") {
    const description = "send the request with Content-Type: application/json";
    return { status: 415, body: error("unsupported_media_type", description, "fix_request"), headers: [] };
  }
  if (!originAllowed(req.headers.origin, req.headers.host, allowedOrigins)) {
    const description = "requests from this origin may not fetch tokens";
    return { status: 403, body: error("forbidden_origin", description, "fix_request"), headers: [] };
  }
  return null;
}

/** True for a request without Origin (not from a browser page), from this host, or from an allowed origin. */
function originAllowed(origin, host, allowedOrigins) {
  if (origin === undefined) return true;
  if (allowedOrigins.has(origin)) return true;
  if (origin === "null" || host === undefined) return false;
  let url;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  return url.host.toLowerCase() === host.trim().toLowerCase();
}

/**
 * The token provider: `POST` with `Content-Type: application/json` → `identify(req)` (sync or async: the user id
 * of the request's session, or null) → `client.issueToken` with `ttlSeconds` (none: the app's default lifetime)
 * and the claims of `claims(req, userId)` → 200 `{"token": ..., "expires_at": RFC 3339 or null}`, not cached.
 * Refuses other methods (405 with Allow), other content types (415), browser requests from an origin other than
 * this host or `allowedOrigins` (403), no session (401), and authsvc failing (503 with Retry-After when
 * unavailable, else 500, no internals). Mount it with `app.all(path, ...)` so every method reaches it.
 */
function tokenProvider({
  client,
  identify,
  ttlSeconds,
  claims,
  allowedOrigins = [],
  retryAfterSeconds = DEFAULT_RETRY_AFTER,
  onError,
} = {}) {
  if (!client || typeof client.issueToken !== "function") {
    throw new TypeError("client must be an AuthClient (made with the app's credential)");
  }
  if (typeof identify !== "function") throw new TypeError("identify must be a function: (req) => user id or null");
  if (claims !== undefined && typeof claims !== "function") throw new TypeError("claims must be a function");
  const allowed = new Set(allowedOrigins);
  return async function authsvcTokenProvider(req, res, next) {
    const refused = refuseTokenRequest(req, allowed);
    if (refused) return send(res, refused);
    try {
      const userId = await identify(req);
      if (userId !== null && userId !== undefined && typeof userId !== "string") {
        throw new TypeError("identify must return the user id as a string, or null");
      }
      if (!userId) {
        return send(res, { status: 401, body: error("no_session", "sign in to get a token", "authenticate"), headers: [] });
      }
      const extra = claims ? await claims(req, userId) : undefined;
      let issued;
      try {
        issued = await client.issueToken({ userId, ttlSeconds, claims: extra ?? undefined });
      } catch (error) {
        if (!isClientError(error)) throw error;
        return send(res, failedCall(error, retryAfterSeconds, "the backend could not issue a token", onError));
      }
      const expiresAt = issued.expiresAt ? issued.expiresAt.toISOString() : null;
      return send(res, { status: 200, body: { token: issued.token, expires_at: expiresAt }, headers: [] });
    } catch (error) {
      // identify or claims failed: the backend's own error, for its error handling (plain http: a 500 here).
      if (typeof next === "function") return next(error);
      process.emitWarning(error);
      return send(res, serverError("the backend could not issue a token"));
    }
  };
}

module.exports = { bearerAuth, tokenProvider, DESCRIPTIONS };
