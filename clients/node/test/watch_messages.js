"use strict";
// WatchState messages made here, as grpc-js hands them to the LocalVerifier's handler: encoded with the proto, then
// decoded by proto-loader's deserializer. Shared by local_verifier_stream.test.js and bench/fresh_ab.js, which passes
// the modules of the tree it measures.

const path = require("node:path");

const PROTOS = path.resolve(__dirname, "..", "..", "..", "protos");

/** A function of a message's fields to the message as grpc-js would deliver it. */
function watchMessages({ protoLoader = require("@grpc/proto-loader"), protobuf = require("protobufjs") } = {}) {
  const method = protoLoader.loadSync("authsvc/v1/auth_service.proto", {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [PROTOS],
  })["authsvc.v1.AuthService"].WatchState;
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => (target.startsWith("google/protobuf/") ? target : path.resolve(PROTOS, target));
  root.loadSync("authsvc/v1/auth_service.proto", { keepCase: true });
  const Response = root.lookupType("authsvc.v1.WatchStateResponse");
  return (fields) => method.responseDeserialize(Buffer.from(Response.encode(Response.fromObject(fields)).finish()));
}

module.exports = { watchMessages };
