"use strict";
/**
 * Where the authsvc .proto files are. In authsvc's repository (clients/node beside protos/ and pyproject.toml):
 * the repository's protos/, always the current ones. Anywhere else (a package installed from `npm pack`'s
 * tarball): the package's own protos/authsvc, copied in when it was packed (scripts/protos.js, the prepack
 * script). google/rpc's status protos are always in ./protos (committed with the client).
 */

const fs = require("node:fs");
const path = require("node:path");

const PROTO_FILE = "authsvc/v1/auth_service.proto";
const BUNDLED = path.join(__dirname, "protos");
const CHECKOUT = path.resolve(__dirname, "..", "..");
const REPOSITORY = path.join(CHECKOUT, "protos");

function protoRoot() {
  const inRepository =
    fs.existsSync(path.join(CHECKOUT, "pyproject.toml")) && fs.existsSync(path.join(REPOSITORY, PROTO_FILE));
  if (inRepository) return REPOSITORY;
  if (fs.existsSync(path.join(BUNDLED, PROTO_FILE))) return BUNDLED;
  throw new Error(
    `@authsvc/client: ${PROTO_FILE} is missing from ${BUNDLED}; install the package from the tarball of ` +
      "`npm pack` in authsvc's clients/node, which copies the protos in",
  );
}

/** The include directory that holds authsvc/v1/auth_service.proto. */
const PROTO_ROOT = protoRoot();

module.exports = { PROTO_ROOT, PROTO_FILE, RPC_PROTOS: BUNDLED };
