"use strict";
/**
 * How many verifications a second the Node LocalVerifier makes on one thread, against a real authsvc.
 *
 *   node clients/node/bench/local_verify.js INPUT.json
 *
 * INPUT: {"target": "host:port", "seconds": 2, "cases": [{"name": "hs256_repeated", "api_key": "...",
 * "credential": "...", "hs256_secret": "..." | null, "tokens": ["..."], "repeat": true}, ...]}. For each case a
 * LocalVerifier of the app is started against the target; then `repeat: true` verifies the first token over and
 * over for `seconds`, `repeat: false` each token once, in order, until the list or the time runs out. Every verdict
 * must be VALID (else the script fails, naming the case and the outcome). It prints one line of JSON:
 * {"hs256_repeated": {"per_second": 312345.6, "verifications": 624691, "seconds": 2.0, "cpu_seconds": 1.98}, ...}
 * (cpu_seconds: this process's CPU time in the window, for machines where the thread did not have a core to itself).
 *
 * The loop hands the event loop a turn every SLICE_MS, as a server would between requests, so that the stream's
 * heartbeats keep the verifier's lag low however long the run.
 */

const fs = require("node:fs");
const path = require("node:path");
const { performance } = require("node:perf_hooks");
const { LocalVerifier } = require(path.resolve(__dirname, ".."));

const SLICE_MS = 50;
const CHECK_EVERY = 256; // verifications between two looks at the clock

function fail(message) {
  process.stderr.write(`local_verify: ${message}\n`);
  process.exit(1);
}

function turn() {
  return new Promise((resolve) => setImmediate(resolve));
}

async function measure(verifier, spec, seconds) {
  const tokens = spec.tokens;
  if (!Array.isArray(tokens) || tokens.length === 0) fail(`case ${spec.name}: no tokens`);
  const first = tokens[0];
  let count = 0;
  let index = 0;
  let elapsed = 0;
  const cpuStarted = process.cpuUsage();
  const started = performance.now();
  const limit = started + seconds * 1000;
  for (;;) {
    const sliceEnd = Math.min(performance.now() + SLICE_MS, limit);
    for (;;) {
      for (let i = 0; i < CHECK_EVERY; i++) {
        let token;
        if (spec.repeat) token = first;
        else if (index < tokens.length) token = tokens[index++];
        else break;
        const { outcome } = verifier.verify(token);
        if (outcome !== "VALID") fail(`case ${spec.name}: verification ${count + 1} answered ${outcome}, not VALID`);
        count++;
      }
      if (performance.now() >= sliceEnd || (!spec.repeat && index >= tokens.length)) break;
    }
    elapsed = performance.now() - started;
    if (performance.now() >= limit || (!spec.repeat && index >= tokens.length)) break;
    await turn();
  }
  const cpu = process.cpuUsage(cpuStarted);
  return {
    per_second: Math.round((count / (elapsed / 1000)) * 10) / 10,
    verifications: count,
    seconds: elapsed / 1000,
    // This process's CPU time over the same window: on a shared machine, count / cpu_seconds is the rate of a core.
    cpu_seconds: (cpu.user + cpu.system) / 1e6,
  };
}

async function main() {
  const [file] = process.argv.slice(2);
  if (!file) fail("usage: node clients/node/bench/local_verify.js INPUT.json");
  const input = JSON.parse(fs.readFileSync(file, "utf8"));
  const seconds = Number(input.seconds ?? 2);
  if (!(seconds > 0)) fail("seconds must be positive");
  const results = {};
  for (const spec of input.cases || []) {
    const verifier = new LocalVerifier({
      target: input.target,
      apiKey: spec.api_key,
      credential: spec.credential,
      hs256Secret: spec.hs256_secret ?? undefined,
      startTimeout: 30,
    });
    try {
      await verifier.start();
      results[spec.name] = await measure(verifier, spec, seconds);
    } finally {
      await verifier.close();
    }
  }
  process.stdout.write(`${JSON.stringify(results)}\n`);
}

main().catch((error) => fail(error && error.message ? error.message : String(error)));
