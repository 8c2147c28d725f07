"use strict";
/**
 * Public keys of EdDSA (Ed25519) and ES256 (P-256) apps, from the JSON Web Keys of the state stream, and their
 * signature checks, with node's own crypto: the twin of authsvc/keys.py (verifying only; no I/O).
 */

const crypto = require("node:crypto");

const EDDSA = "EdDSA";
const ES256 = "ES256";
/** Algorithms whose tokens are signed with a private key and verified with its public key. */
const ASYMMETRIC_ALGORITHMS = Object.freeze([EDDSA, ES256]);

/**
 * The public key of a JSON Web Key as authsvc publishes it (Ed25519 or P-256, its `alg` matching), for verifying
 * only: `{ algorithm, publicKey }` with a crypto.KeyObject. Throws TypeError when it is not one or does not load.
 */
function fromJwk(jwk) {
  const { kty, crv, alg } = jwk;
  let material;
  if (kty === "OKP" && crv === "Ed25519" && alg === EDDSA) material = { kty, crv, x: jwk.x };
  else if (kty === "EC" && crv === "P-256" && alg === ES256) material = { kty, crv, x: jwk.x, y: jwk.y };
  else throw new TypeError(`not an EdDSA (Ed25519) or ES256 (P-256) JSON Web Key: ${kty} ${crv}`);
  try {
    return Object.freeze({ algorithm: alg, publicKey: crypto.createPublicKey({ key: material, format: "jwk" }) });
  } catch (error) {
    throw new TypeError(`not a valid ${alg} public key: ${error.message}`);
  }
}

const P256 = Object.freeze({ dsaEncoding: "ieee-p1363" });

function isZero(bytes, start, end) {
  for (let i = start; i < end; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** True when `signature` (JWS encoding) is `key`'s signature of `signingInput` (a string of ASCII). */
function signatureMatches(key, signingInput, signature) {
  try {
    if (key.algorithm === EDDSA) return crypto.verify(null, Buffer.from(signingInput, "latin1"), key.publicKey, signature);
    // JWS ES256 signatures are r || s, 32 bytes each (IEEE P1363); a DER or shortened one is refused, and so is a
    // zero r or s.
    if (signature.length !== 64 || isZero(signature, 0, 32) || isZero(signature, 32, 64)) return false;
    return crypto.verify(
      "sha256",
      Buffer.from(signingInput, "latin1"),
      { key: key.publicKey, dsaEncoding: P256.dsaEncoding },
      signature,
    );
  } catch {
    return false; // a signature of the wrong length for Ed25519, say: OpenSSL refuses it, so does authsvc
  }
}

module.exports = { ASYMMETRIC_ALGORITHMS, EDDSA, ES256, fromJwk, signatureMatches };
