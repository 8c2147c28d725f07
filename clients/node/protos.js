"use strict";
/**
 * Where the authsvc .proto files are: in the package itself (./protos/authsvc, copied in when the package is
 * packed: scripts/protos.js), else, in authsvc's repository, its protos/ folder. google/rpc's status protos are
 * always in ./protos (committed with the client).
 */

const fs = require("node:fs");
const path = require("node:path");

const PROTO_FILE = "authsvc/v1/auth_service.proto";
const BUNDLED = path.join(__dirname, "protos");
const REPOSITORY = path.resolve(__dirname, "..", "..", "protos");

/** The include directory that holds authsvc/v1/auth_service.proto. */
const PROTO_ROOT = fs.existsSync(path.join(BUNDLED, PROTO_FILE)) ? BUNDLED : REPOSITORY;

module.exports = { PROTO_ROOT, PROTO_FILE, RPC_PROTOS: BUNDLED };
