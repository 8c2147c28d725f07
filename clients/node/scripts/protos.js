"use strict";
/**
 * `npm pack` (and `npm publish`) scripts: the package carries the authsvc .proto files it loads at run time.
 *
 *   node scripts/protos.js bundle   (prepack)  copies <repository>/protos/authsvc into ./protos/authsvc
 *   node scripts/protos.js clean    (postpack) removes that copy again, so the source tree keeps one copy
 *
 * In the repository, the client loads the repository's protos/ (protos.js at the package's root decides), so a
 * copy left behind by an interrupted pack is never used there; the packed tarball has the copy, and needs nothing
 * outside it.
 * Outside the repository (packing an unpacked tarball again), there is nothing to copy and nothing to remove.
 */

const fs = require("node:fs");
const path = require("node:path");

const PACKAGE = path.resolve(__dirname, "..");
const SOURCE = path.resolve(PACKAGE, "..", "..", "protos", "authsvc");
const BUNDLED = path.join(PACKAGE, "protos", "authsvc");

function bundle() {
  if (!fs.existsSync(SOURCE)) {
    if (!fs.existsSync(BUNDLED)) throw new Error(`no protos to bundle: neither ${SOURCE} nor ${BUNDLED} exists`);
    return;
  }
  fs.rmSync(BUNDLED, { recursive: true, force: true });
  fs.cpSync(SOURCE, BUNDLED, { recursive: true, filter: (from) => fs.statSync(from).isDirectory() || from.endsWith(".proto") });
}

function clean() {
  if (fs.existsSync(SOURCE)) fs.rmSync(BUNDLED, { recursive: true, force: true });
}

const command = process.argv[2];
if (command === "bundle") bundle();
else if (command === "clean") clean();
else {
  console.error("usage: node scripts/protos.js bundle|clean");
  process.exit(2);
}
