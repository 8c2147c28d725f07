// Types of @authsvc/client (index.js). See README.md next to this file.
import type { ChannelCredentials, ChannelOptions, status as GrpcStatus } from "@grpc/grpc-js";

/** authsvc.v1.VerifyOutcome without the `VERIFY_OUTCOME_` prefix. An outcome is an answer, not an error. */
export type VerifyOutcomeName =
  | "UNSPECIFIED"
  | "VALID"
  | "MALFORMED"
  | "INVALID_SIGNATURE"
  | "UNKNOWN_KEY"
  | "EXPIRED"
  | "NOT_YET_VALID"
  | "WRONG_AUDIENCE"
  | "REVOKED"
  /** A LocalVerifier's answer when its copy of the state is older than its maxLag; the server never sends it. */
  | "UNAVAILABLE"
  /** An empty token (an anonymous user) for an app whose anonymous_access is off. */
  | "ANONYMOUS_DISABLED";

export declare const VerifyOutcome: Readonly<{ [Name in VerifyOutcomeName]: Name }>;

/** authsvc.v1.Role without the `ROLE_` prefix: who a verified token speaks for. */
export type RoleName = "UNSPECIFIED" | "USER" | "GUEST" | "ANONYMOUS";

export declare const Role: Readonly<{ [Name in RoleName]: Name }>;

/** A guest token minted by IssueGuestToken. */
export interface GuestToken {
  token: string;
  /** `guest-` and the requested or a random id. */
  userId: string;
  issuedAt: Date;
  expiresAt: Date | null;
  keyId: string;
}

/** Channel options for client-side round robin over every address the target resolves to. */
export declare const ROUND_ROBIN: Readonly<ChannelOptions>;

/** The calls retried on UNAVAILABLE: those safe to repeat. IssueToken is never retried (it would mint twice). */
export declare const RETRIED_METHODS: readonly string[];

/** The gRPC status codes (grpc.status of @grpc/grpc-js). */
export declare const status: typeof GrpcStatus;

export interface AuthClientOptions {
  /** host:port, or any gRPC target such as dns:///authsvc-headless.<ns>.svc.cluster.local:50051 */
  target: string;
  /** The app's API key, sent as `x-api-key` on every call. */
  apiKey: string;
  /** The API secret or a server token, sent as `authorization: Bearer ...` by issue, revoke and clear. */
  credential?: string;
  /** The deadline of each call, in milliseconds, retries included (default 5000). */
  timeoutMs?: number;
  /** Attempts of the retried calls (RETRIED_METHODS) on UNAVAILABLE: 1 to 5, default 3; 1 turns retries off. */
  retryAttempts?: number;
  /** Default: insecure (plaintext); pass grpc.credentials.createSsl() for TLS. */
  channelCredentials?: ChannelCredentials;
  /** gRPC channel options, e.g. ROUND_ROBIN. */
  channelOptions?: ChannelOptions;
}

export interface IssueTokenRequest {
  userId: string;
  /** Lifetime counted from the issue time; or give expiresAt; neither: the app's default lifetime. */
  ttlSeconds?: number;
  expiresAt?: Date;
  /** Extra JSON claims; registered claims (user_id, iat, exp, ...) are refused with RESERVED_CLAIM. */
  claims?: Record<string, unknown>;
}

export interface IssuedToken {
  token: string;
  issuedAt: Date;
  /** null when the token never expires. */
  expiresAt: Date | null;
  keyId: string;
}

export interface Verification {
  outcome: VerifyOutcomeName;
  valid: boolean;
  /** Set once the signature checked out (an EXPIRED answer still names the user); else null. */
  userId: string | null;
  issuedAt: Date | null;
  expiresAt: Date | null;
  claims: Record<string, unknown>;
  devToken: boolean;
  /** For REVOKED: which revocation decided (the app's, then the user's, then the token's, in that order). */
  revokedBy: "APP" | "USER" | "TOKEN" | "UNSPECIFIED" | null;
  /** For REVOKED: the deciding revocation's time (null for an app's requireIat refusing a token without iat). */
  revokedBefore: Date | null;
  /** For NOT_YET_VALID: from when the token is valid (the later of nbf and iat). */
  validFrom: Date | null;
  /** For every outcome but VALID: REFRESH (EXPIRED), RETRY_LATER (NOT_YET_VALID, UNAVAILABLE), else LOGOUT. */
  clientAction: "REFRESH" | "LOGOUT" | "RETRY_LATER" | "UNSPECIFIED" | null;
  /** USER, GUEST (a `guest-` user id), ANONYMOUS (an empty token, app allowing it); UNSPECIFIED without a user. */
  role: RoleName;
}

/** A token revocation in force (RevokeToken). */
export interface RevokedToken {
  jti: string;
  /** When the token was revoked (the first time, when revoked again). */
  revokedBefore: Date;
  /** Kept until then (the token's exp); null: until cleared. */
  expiresAt: Date | null;
}

/** A failed call, decoded from the google.rpc.ErrorInfo in the `grpc-status-details-bin` trailer. */
export declare class AuthsvcClientError extends Error {
  /** The gRPC status code, as in `status`. */
  readonly code: number;
  /** The status code's name, e.g. "INVALID_ARGUMENT". */
  readonly codeName: string;
  /** The ErrorInfo reason, e.g. "INVALID_USER_ID"; "" when the status carried none (deadline, connection). */
  readonly reason: string;
  /** The ErrorInfo domain: "authsvc" for authsvc's own errors. */
  readonly domain: string;
  readonly metadata: Record<string, string>;
  /** The status message, meant for people. */
  readonly details: string;
  /**
   * Milliseconds to wait before a retry may succeed, when the server said so (a google.rpc.RetryInfo: a rate limit,
   * RESOURCE_EXHAUSTED GUEST_RATE_LIMITED); null otherwise.
   */
  readonly retryAfterMs: number | null;
}

export declare class AuthClient {
  constructor(options: AuthClientOptions);
  readonly target: string;
  readonly timeoutMs: number;
  /** IssueToken; needs the credential. */
  issueToken(request: IssueTokenRequest): Promise<IssuedToken>;
  /** IssueGuestToken; needs only the API key and the app's guest_access on. `userId` without the `guest-` prefix. */
  issueGuestToken(request?: { userId?: string; name?: string }): Promise<GuestToken>;
  /** VerifyToken; needs only the API key. */
  verifyToken(token: string): Promise<Verification>;
  /** VerifyTokens: 1 to 1,000 tokens, answered in order. */
  verifyTokens(tokens: string[]): Promise<Verification[]>;
  /** RevokeUser; needs the credential. Resolves to the revocation in force per user, in request order. */
  revokeUsers(userIds: string[], options?: { before?: Date }): Promise<Map<string, Date>>;
  /** RevokeApp; needs the credential. Resolves to the app's revocation in force. */
  revokeApp(options?: { before?: Date }): Promise<Date>;
  /** RevokeToken: one token (one device), by the token itself or its jti; needs the credential. */
  revokeToken(target: string | { jti: string }): Promise<RevokedToken>;
  /** ClearRevocation of tokens, by jti; needs the credential. Resolves to the jtis that had a revocation. */
  clearTokenRevocations(jtis: string[]): Promise<string[]>;
  /** ClearRevocation of users; needs the credential. Resolves to the users that had a revocation. */
  clearUserRevocations(userIds: string[]): Promise<string[]>;
  /** ClearRevocation of the app; needs the credential. Resolves to true when it had one. */
  clearAppRevocation(): Promise<boolean>;
  close(): void;
}

export interface LocalVerifierOptions {
  /** host:port of authsvc, or any gRPC target. */
  target: string;
  /** The app's API key. */
  apiKey: string;
  /** The API secret or a server token: it opens the WatchState stream. */
  credential: string;
  /** HS256 apps: the API secret that signs the app's tokens, or several during a rotation. EdDSA/ES256: none. */
  hs256Secret?: string | string[];
  /** Seconds the state may go unconfirmed before verify answers "UNAVAILABLE" (default 10). */
  maxLag?: number;
  /** Tokens whose signature checked out, remembered (default 10,000; 0: none). */
  cacheSize?: number;
  /** Seconds start() waits for the first snapshot (default 30). */
  startTimeout?: number;
  /** Seconds before the first reconnection (default 0.1), doubling up to reconnectMaxBackoff (default 5), jittered. */
  reconnectBackoff?: number;
  reconnectMaxBackoff?: number;
  /** Default: insecure (plaintext); pass grpc.credentials.createSsl() for TLS. */
  channelCredentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
  /** Now, in microseconds since the epoch (default: the wall clock). */
  clock?: () => number;
}

/** What onRevoked callbacks get: close these users' connections (or every one, for `app` and `resync`). */
export interface Revoked {
  /** Users just revoked (as far as the server could tell). */
  readonly userIds: readonly string[];
  /** The whole app was revoked. */
  readonly app: boolean;
  /** Changes were missed (a fresh snapshot after a reconnection): verify every open connection again. */
  readonly resync: boolean;
  /** Tokens just revoked (RevokeToken), by jti: close the connections that presented them. */
  readonly jtis: readonly string[];
}

/** Verifies one app's tokens in this process, on a copy of its state that AuthService.WatchState keeps current. */
export declare class LocalVerifier {
  constructor(options: LocalVerifierOptions);
  readonly target: string;
  readonly apiKey: string;
  /** The state version held (0 before the first snapshot). */
  readonly version: number;
  /** Seconds since the state held was last known current (Infinity before the first snapshot). */
  readonly lag: number;
  /** Why the stream last failed, or null. */
  readonly lastError: AuthsvcClientError | null;
  /** Resolves once the first snapshot is loaded; rejects with AuthsvcClientError, or TypeError for no accepted secret. */
  start(): Promise<void>;
  /** Synchronous, no I/O: the same Verification as AuthClient.verifyToken (claims frozen); "UNAVAILABLE" past maxLag. */
  verify(token: string): Verification;
  /** Calls `callback` for each revocation as it arrives; returns a function that removes it. */
  onRevoked(callback: (event: Revoked) => unknown): () => void;
  /** The same as onRevoked, under the Python SDK's name. */
  on_revoked(callback: (event: Revoked) => unknown): () => void;
  /** Stops following the state and closes the channel. */
  close(): Promise<void>;
}

// The web-stack middleware (middleware.js); the HTTP contract is in the repository's docs/web.md.
import type { IncomingMessage, ServerResponse } from "node:http";

/** What a client should do about a refused request. */
export type WebAction = "refresh" | "logout" | "retry_later" | "authenticate" | "retry" | "fix_request";

/** The JSON body of every refusal, from bearerAuth and tokenProvider alike. */
export interface WebError {
  error: string;
  error_description: string;
  /** The verdict's outcome when a token was verified ("EXPIRED", "REVOKED", ..., "UNAVAILABLE"), else null. */
  outcome: string | null;
  action: WebAction;
}

/** The token provider's answer: `expires_at` is RFC 3339 in UTC with milliseconds, or null (never expires). */
export interface ProvidedToken {
  token: string;
  expires_at: string | null;
}

/** Anything that verifies: a LocalVerifier (`verify`, sync or async) or an AuthClient (`verifyToken`). */
export type TokenVerifier =
  | { verify(token: string): Verification | Promise<Verification> }
  | { verifyToken(token: string): Promise<Verification> };

/** A connect-style handler: Express, Connect, or plain `http` (where `next` may be left out). */
export type Handler = (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => Promise<void>;

export interface BearerAuthOptions {
  verifier: TokenVerifier;
  /** The realm of WWW-Authenticate (default "api"). */
  realm?: string;
  /** Exact paths (without the query) that need no token: a health check, the token provider. */
  exclude?: Iterable<string>;
  /** Retry-After of a 503 (default 2). */
  retryAfterSeconds?: number;
  /** Hears of each failed RPC (never of a token). */
  onError?: (error: AuthsvcClientError) => void;
  /**
   * Default false. When true, a request without bearer credentials (no Authorization header, or another scheme)
   * is verified as the empty token: for an app with anonymous access on it passes with `req.authsvc` of role
   * "ANONYMOUS" (userId null); otherwise (ANONYMOUS_DISABLED) it gets the usual 401 missing_token.
   */
  allowAnonymous?: boolean;
}

/** Checks `Authorization: Bearer <token>`; a VALID verdict goes on as `req.authsvc`, anything else is answered. */
export declare function bearerAuth(options: BearerAuthOptions): Handler;

export interface TokenProviderOptions<Req extends IncomingMessage = IncomingMessage> {
  /** An AuthClient made with the app's credential. */
  client: AuthClient;
  /** The backend's own "who is this session": the user id, or null (401). */
  identify: (req: Req) => string | null | undefined | Promise<string | null | undefined>;
  /** The token's lifetime; none: the app's default lifetime. */
  ttlSeconds?: number;
  /** Extra claims for the user's token. */
  claims?: (req: Req, userId: string) => Record<string, unknown> | null | undefined | Promise<Record<string, unknown> | null | undefined>;
  /** Browser origins besides this host's that may fetch tokens. */
  allowedOrigins?: Iterable<string>;
  /** Retry-After of a 503 (default 2). */
  retryAfterSeconds?: number;
  /** Hears of each failed IssueToken. */
  onError?: (error: AuthsvcClientError) => void;
}

/** The token provider: POST → `{"token": ..., "expires_at": ...}` (ProvidedToken). Mount it with `app.all`. */
export declare function tokenProvider<Req extends IncomingMessage = IncomingMessage>(
  options: TokenProviderOptions<Req>,
): Handler;

/** The error_description of each outcome but VALID, after "<OUTCOME>: ". */
export declare const DESCRIPTIONS: Readonly<Record<string, string>>;

declare module "node:http" {
  interface IncomingMessage {
    /** The VALID Verification, set by bearerAuth (role "ANONYMOUS", userId null, for an anonymous user). */
    authsvc?: Verification;
  }
}
