"use strict";
/**
 * The Node LocalVerifier's rates, this tree against another commit's, interleaved (A/B/A/B) so that both sides
 * share whatever else the machine is doing. No server: each side's verifier gets its state through its own message
 * handler, as the stream would deliver it.
 *
 *   node clients/node/bench/fresh_ab.js [--base REF] [--tree REF] [--rounds 4] [--tokens 150000] [--revoked 1000] [--seconds 1]
 *                                       [--revocations older|newer]
 *
 * The tokens are authsvc's own form (IssueToken's header and claims: kid, typ, user_id, iat and exp with their
 * microseconds, aud, iss, a random jti), each for a new user, of an HS256 app with `--revoked` revoked users: what
 * row l-rates of `make bench` measures as "HS256, each token once". The revocations are a minute older than the
 * tokens (as there, where they come from scenario (g)), or with `--revocations newer` a minute newer, so that
 * every token's user is looked up. Each round runs each side in a new process: a
 * LocalVerifier verifies one token over and over for `--seconds` (the bench's "repeated" case, which also warms
 * up the code, as it does there), then a new one verifies every token once. Rates are per second of the process's
 * CPU time (this is a shared machine: a process that lost its core for a while is not slower for it) and per
 * second of wall time. The base (default HEAD) is checked out with `git archive` into a temporary folder that shares
 * this tree's node_modules; so is the other side when `--tree` names a commit (default: this working tree as it is).
 */

const { execFileSync, spawnSync } = require("node:child_process");
const crypto = require("node:crypto");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { performance } = require("node:perf_hooks");

const CLIENT = path.resolve(__dirname, "..");
const { watchMessages } = require(path.join(CLIENT, "test", "watch_messages"));
const API_KEY = "ak_bench_fresh_ab_0123456789";
const SECRET = "bench-secret-of-this-script-only-0123456789abcdef";
const KID = "sk_bench_kid_01";
const LIFETIME = 3600 * 1_000_000;

function options(argv) {
  const found = { base: "HEAD", tree: "", rounds: 4, tokens: 150_000, revoked: 1000, seconds: 1, revocations: "older" };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (!(name in found) || argv[i + 1] === undefined) throw new Error(`unknown or incomplete option ${argv[i]}`);
    found[name] = typeof found[name] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!["older", "newer"].includes(found.revocations)) throw new Error("--revocations is older or newer");
  return found;
}

function b64(text) {
  return Buffer.from(text).toString("base64url");
}

/** Tokens as authsvc/tokens.py issue() mints them (PyJWT's compact JSON, the header's keys in its order). */
function mint(count, nowMicros) {
  const header = b64(JSON.stringify({ alg: "HS256", kid: KID, typ: "JWT" }));
  const made = new Array(count);
  for (let i = 0; i < count; i++) {
    const iat = nowMicros + i;
    const payload = {
      user_id: `lfresh-${i}`,
      iat: iat / 1e6,
      aud: API_KEY,
      iss: "authsvc",
      jti: crypto.randomBytes(16).toString("hex"),
      exp: (iat + LIFETIME) / 1e6,
    };
    const input = `${header}.${b64(JSON.stringify(payload))}`;
    made[i] = `${input}.${crypto.createHmac("sha256", SECRET).update(input).digest("base64url")}`;
  }
  return made;
}

/** A snapshot of the app with `revoked` users revoked at `revokedAt`, as grpc-js hands the message to the handler. */
function snapshot(dir, revoked, revokedAt) {
  const message = watchMessages({
    protoLoader: require(path.join(dir, "node_modules", "@grpc", "proto-loader")),
    protobuf: require(path.join(dir, "node_modules", "protobufjs")),
  });
  const { secretFingerprint } = require(path.join(dir, "watch_wire"));
  const hashes = [];
  for (let i = 0; i < revoked; i++) {
    hashes.push(crypto.createHash("sha256").update(`prop-${i}`).digest().readBigInt64BE(0));
  }
  hashes.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const fields = {
    version: 1,
    snapshot: {
      app: {
        api_key: API_KEY,
        algorithm: "HS256",
        clock_leeway: { seconds: 5 },
        secrets: [{ kid: KID, fingerprint: secretFingerprint(SECRET, API_KEY) }],
      },
      user_hashes: hashes.map(String),
      revoked_before: hashes.map(() => String(revokedAt)),
      last: true,
    },
  };
  return message(fields);
}

function cpuSeconds(since) {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
}

/** One side, in this process: {repeated, fresh}, each {cpu: per CPU second, wall: per second}. */
function child(dir, tokensFile, revoked, revokedAt, seconds) {
  const { LocalVerifier } = require(dir);
  const tokens = JSON.parse(fs.readFileSync(tokensFile, "utf8"));
  const message = snapshot(dir, revoked, revokedAt);
  const started = () => {
    const verifier = new LocalVerifier({ target: "127.0.0.1:1", apiKey: API_KEY, credential: "unused", hs256Secret: SECRET, maxLag: 3600 });
    verifier._receive(message);
    return verifier;
  };
  const check = (verdict, what) => {
    if (verdict.outcome !== "VALID") throw new Error(`${what} answered ${verdict.outcome}`);
  };

  let verifier = started();
  const first = tokens[0];
  let count = 0;
  let cpu = process.cpuUsage();
  let wall = performance.now();
  const until = wall + seconds * 1000;
  while (performance.now() < until) {
    for (let i = 0; i < 256; i++) check(verifier.verify(first), "a repeated token");
    count += 256;
  }
  const repeated = { cpu: count / cpuSeconds(cpu), wall: count / ((performance.now() - wall) / 1000) };

  verifier = started();
  cpu = process.cpuUsage();
  wall = performance.now();
  for (let i = 0; i < tokens.length; i++) check(verifier.verify(tokens[i]), "a fresh token");
  const fresh = { cpu: tokens.length / cpuSeconds(cpu), wall: tokens.length / ((performance.now() - wall) / 1000) };
  process.stdout.write(`${JSON.stringify({ repeated, fresh })}\n`);
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function main() {
  if (process.argv[2] === "--child") {
    const [dir, tokensFile, revoked, revokedAt, seconds] = process.argv.slice(3);
    child(dir, tokensFile, Number(revoked), Number(revokedAt), Number(seconds));
    return;
  }
  const opts = options(process.argv.slice(2));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "fresh-ab-"));
  try {
    // The client and the protos it loads (../../protos, found beside pyproject.toml), as they are at a commit.
    const top = execFileSync("git", ["rev-parse", "--show-toplevel"], { cwd: CLIENT, encoding: "utf8" }).trim();
    const prefix = path.relative(top, CLIENT);
    const checkout = (ref, name) => {
      const archive = execFileSync("git", ["archive", ref, prefix, "protos", "pyproject.toml"], { cwd: top, maxBuffer: 1 << 28 });
      fs.mkdirSync(path.join(tmp, name));
      execFileSync("tar", ["-x", "-C", path.join(tmp, name)], { input: archive });
      const dir = path.join(tmp, name, prefix);
      fs.symlinkSync(path.join(CLIENT, "node_modules"), path.join(dir, "node_modules"));
      return dir;
    };
    const baseDir = checkout(opts.base, "base");
    const treeDir = opts.tree ? checkout(opts.tree, "tree") : CLIENT;
    const tokensFile = path.join(tmp, "tokens.json");
    const minted = Date.now() * 1000;
    fs.writeFileSync(tokensFile, JSON.stringify(mint(opts.tokens, minted)));
    const revokedAt = minted + (opts.revocations === "older" ? -60_000_000 : 60_000_000);
    const sides = { base: baseDir, tree: treeDir };
    const results = { base: [], tree: [] };
    for (let round = 0; round < opts.rounds; round++) {
      for (const side of round % 2 === 0 ? ["base", "tree"] : ["tree", "base"]) {
        const run = spawnSync(
          process.execPath,
          [__filename, "--child", sides[side], tokensFile, String(opts.revoked), String(revokedAt), String(opts.seconds)],
          { encoding: "utf8" },
        );
        if (run.status !== 0) throw new Error(`${side} failed: ${run.stderr}`);
        const result = JSON.parse(run.stdout.trim().split("\n").pop());
        results[side].push(result);
        const show = (r) => `${Math.round(r.cpu).toLocaleString("en")}/cpu-s ${Math.round(r.wall).toLocaleString("en")}/s`;
        console.log(`round ${round + 1} ${side.padEnd(4)} fresh ${show(result.fresh)}  repeated ${show(result.repeated)}`);
      }
    }
    for (const kind of ["fresh", "repeated"]) {
      const base = median(results.base.map((r) => r[kind].cpu));
      const tree = median(results.tree.map((r) => r[kind].cpu));
      console.log(
        `median ${kind}: base (${opts.base}) ${Math.round(base).toLocaleString("en")}/cpu-s, tree (${opts.tree || "working tree"}) ${Math.round(tree).toLocaleString("en")}/cpu-s (${(tree / base).toFixed(2)}x)`,
      );
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (require.main === module) main();

module.exports = { mint, snapshot };
