"""Apps that sign with EdDSA (Ed25519) or ES256 (P-256): tokens verify with the public key, and only so."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from authsvc.keys import EDDSA, ES256
from authsvc.server import RunningServer
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewApp
from tests.support import api_key_only, backend, newest_kid

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)))


async def verify(stub: AuthServiceAsyncStub, app: Any, token: str) -> pb.VerifyTokenResponse:
    response: pb.VerifyTokenResponse = await stub.VerifyToken(
        pb.VerifyTokenRequest(token=token), metadata=api_key_only(app)
    )
    return response


@pytest.mark.parametrize("algorithm", [EDDSA, ES256])
async def test_issued_tokens_verify_with_the_public_key(
    stub: AuthServiceAsyncStub, new_app: NewApp, algorithm: str
) -> None:
    app = await new_app(algorithm=algorithm)
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    header = jwt.get_unverified_header(issued.token)
    assert (header["alg"], header["kid"]) == (algorithm, newest_kid(app))
    assert (await verify(stub, app, issued.token)).valid
    # Any JWT library verifies it with the public key alone.
    assert app.key_pairs[0].key is not None
    claims = jwt.decode(issued.token, app.key_pairs[0].key.public_key, algorithms=[algorithm], audience=app.api_key)
    assert claims["user_id"] == "alice"


@pytest.mark.parametrize("algorithm", [EDDSA, ES256])
async def test_hmac_signed_with_the_public_key_fails(
    stub: AuthServiceAsyncStub, new_app: NewApp, algorithm: str
) -> None:
    app = await new_app(algorithm=algorithm)
    assert app.key_pairs[0].key is not None
    public = app.key_pairs[0].key.public_key
    encodings = [
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ]
    for key in encodings:
        for alg in ("HS256", "HS384", "HS512"):
            digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
            header = {"alg": alg, "kid": newest_kid(app)}
            payload = {"user_id": "mallory"}
            signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}".encode()
            token = forge(header, payload, hmac.new(key, signing_input, digest).digest())
            assert (await verify(stub, app, token)).outcome == pb.VERIFY_OUTCOME_INVALID_SIGNATURE


async def test_api_secret_signed_token_fails_for_an_asymmetric_app(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app(algorithm=EDDSA)
    token = jwt.encode({"user_id": "alice"}, app.api_secret, algorithm="HS256")
    assert (await verify(stub, app, token)).outcome == pb.VERIFY_OUTCOME_INVALID_SIGNATURE


async def test_zero_and_tampered_ecdsa_signatures_fail(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app(algorithm=ES256)
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    header, payload, signature = issued.token.split(".")
    zero = f"{header}.{payload}.{b64(bytes(64))}"
    assert (await verify(stub, app, zero)).outcome == pb.VERIFY_OUTCOME_INVALID_SIGNATURE
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 1
    tampered = f"{header}.{payload}.{b64(bytes(raw))}"
    assert (await verify(stub, app, tampered)).outcome == pb.VERIFY_OUTCOME_INVALID_SIGNATURE


async def test_a_token_of_another_key_fails(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    first, second = await new_app(algorithm=EDDSA), await new_app(algorithm=EDDSA)
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(first))
    assert (await verify(stub, second, issued.token)).outcome == pb.VERIFY_OUTCOME_UNKNOWN_KEY
    header, payload, signature = issued.token.split(".")
    no_kid = forge({"alg": EDDSA}, json.loads(base64.urlsafe_b64decode(payload + "==")), b"x" * 64)
    assert (await verify(stub, second, no_kid)).outcome == pb.VERIFY_OUTCOME_INVALID_SIGNATURE


@pytest.mark.parametrize("algorithm", [EDDSA, ES256])
async def test_jwks_over_grpc_and_http_verifies_issued_tokens(
    stub: AuthServiceAsyncStub, new_app: NewApp, server: RunningServer, algorithm: str
) -> None:
    app = await new_app(algorithm=algorithm)
    issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    response = await stub.GetJwks(pb.GetJwksRequest(), metadata=api_key_only(app))
    assert [key.kid for key in response.keys] == [newest_kid(app)]
    url = f"http://127.0.0.1:{server.http_port}/.well-known/jwks/{app.api_key}.json"
    document = await asyncio.to_thread(fetch_json, url)
    assert [key["kid"] for key in document["keys"]] == [newest_kid(app)]
    # A plain JWT library verifies the token with nothing but the published key set.
    jwk = jwt.PyJWKSet.from_dict(document)[newest_kid(app)]
    claims = jwt.decode(issued.token, jwk.key, algorithms=[algorithm], audience=app.api_key)
    assert claims["user_id"] == "alice"


async def test_jwks_of_hs256_apps_is_empty_and_unknown_apps_get_404(
    stub: AuthServiceAsyncStub, new_app: NewApp, server: RunningServer
) -> None:
    app = await new_app()
    assert list((await stub.GetJwks(pb.GetJwksRequest(), metadata=api_key_only(app))).keys) == []
    url = f"http://127.0.0.1:{server.http_port}/.well-known/jwks/nosuchapp.json"
    with pytest.raises(urllib.error.HTTPError) as info:
        await asyncio.to_thread(fetch_json, url)
    info.value.close()
    assert info.value.code == 404
