"""TLS and mutual TLS on the gRPC port: real servers with certificates made here, real clients, real handshakes.

A throwaway PKI per session: a CA, a server certificate for localhost and 127.0.0.1 (SAN), a client certificate,
and a second CA with a client certificate of its own, so that "signed by someone else" is tested too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc import tls
from authsvc.client import AuthClient
from authsvc.config import Settings
from authsvc.errors import ConfigError
from authsvc.server import RunningServer, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import NewApp
from tests.processes import authsvc, clean_env, serve
from tests.support import FakeClock, api_key_only, backend

SERVING = health_pb2.HealthCheckResponse.SERVING
CALL_TIMEOUT = 30.0
"""Only a guard against a hung test: every failure asserted below is a refused handshake (UNAVAILABLE)."""


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Writes `<name>.pem` and `<name>-key.pem`; returns their paths."""
        cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def issue(common_name: str, issuer: Identity | None = None, *, usage: str = "ca") -> Identity:
    """A certificate for `common_name` signed by `issuer` (self-signed when None): a CA, a `server` certificate
    for localhost and 127.0.0.1, or a `client` certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=usage == "ca", path_length=None), critical=True)
    )
    if usage == "ca":
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif usage == "server":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return Identity(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    """The session's certificates, as files and as PEM."""

    dir: Path
    ca: Identity
    server: Identity
    client: Identity
    other_ca: Identity
    other_client: Identity

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def server_cert_file(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key_file(self) -> Path:
        return self.dir / "server-key.pem"

    @property
    def client_cert_file(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key_file(self) -> Path:
        return self.dir / "client-key.pem"

    @property
    def other_client_key_file(self) -> Path:
        return self.dir / "other-client-key.pem"

    def credentials(self, *, roots: Identity | None = None, client: Identity | None = None) -> grpc.ChannelCredentials:
        """Client credentials trusting `roots` (default: the CA), presenting `client`'s certificate if given."""
        return grpc.ssl_channel_credentials(
            root_certificates=(roots or self.ca).cert_pem,
            private_key=client.key_pem if client else None,
            certificate_chain=client.cert_pem if client else None,
        )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = issue("authsvc test CA")
    other_ca = issue("some other CA")
    made = Pki(
        directory,
        ca,
        issue("localhost", ca, usage="server"),
        issue("chat-server", ca, usage="client"),
        other_ca,
        issue("chat-server", other_ca, usage="client"),
    )
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    made.server.write(directory, "server")
    made.client.write(directory, "client")
    made.other_client.write(directory, "other-client")
    return made


@pytest.fixture(scope="module")
async def tls_server(store: Store, state: State, settings: Settings, pki: Pki) -> AsyncIterator[RunningServer]:
    """A real authsvc server whose gRPC port speaks TLS (no client certificates asked)."""
    tls_settings = settings.with_overrides(tls_cert_file=pki.server_cert_file, tls_key_file=pki.server_key_file)
    running = await start_server(store, state, tls_settings, FakeClock())
    yield running
    await running.stop(None)


@pytest.fixture(scope="module")
async def mtls_server(store: Store, state: State, settings: Settings, pki: Pki) -> AsyncIterator[RunningServer]:
    """A real authsvc server whose gRPC port requires client certificates signed by the test CA."""
    mtls_settings = settings.with_overrides(
        tls_cert_file=pki.server_cert_file, tls_key_file=pki.server_key_file, tls_client_ca_file=pki.ca_file
    )
    running = await start_server(store, state, mtls_settings, FakeClock())
    yield running
    await running.stop(None)


def channel(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, credentials)


async def health(target: str, credentials: grpc.ChannelCredentials | None) -> int:
    """The overall health status, asked over a fresh channel with `credentials` (None: plaintext)."""
    async with channel(target, credentials) as ch:
        response = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
    return int(response.status)


async def refused(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status of a health check that must fail; fails the test if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await health(target, credentials)
    return failure.value.code()


async def test_tls_client_trusting_the_ca_issues_and_verifies(
    tls_server: RunningServer, pki: Pki, new_app: NewApp
) -> None:
    for host in ("localhost", "127.0.0.1"):  # the certificate names both
        assert await health(f"{host}:{tls_server.port}", pki.credentials()) == SERVING
    app = await new_app("tls")
    async with channel(f"localhost:{tls_server.port}", pki.credentials()) as ch:
        stub = auth_service_pb2_grpc.AuthServiceStub(ch)
        issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
        result = await stub.VerifyToken(pb.VerifyTokenRequest(token=issued.token), metadata=api_key_only(app))
    assert result.valid and result.outcome == pb.VERIFY_OUTCOME_VALID and result.user_id == "alice"


async def test_tls_port_refuses_plaintext_and_clients_trusting_another_ca(tls_server: RunningServer, pki: Pki) -> None:
    target = f"localhost:{tls_server.port}"
    assert await refused(target, None) == grpc.StatusCode.UNAVAILABLE
    assert await refused(target, pki.credentials(roots=pki.other_ca)) == grpc.StatusCode.UNAVAILABLE
    assert await refused(target, grpc.ssl_channel_credentials()) == grpc.StatusCode.UNAVAILABLE  # system roots
    # A certificate presented to a server that asks for none is simply not looked at.
    assert await health(target, pki.credentials(client=pki.other_client)) == SERVING


async def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(
    mtls_server: RunningServer, pki: Pki, new_app: NewApp
) -> None:
    target = f"localhost:{mtls_server.port}"
    assert await refused(target, None) == grpc.StatusCode.UNAVAILABLE
    assert await refused(target, pki.credentials()) == grpc.StatusCode.UNAVAILABLE  # no client certificate
    assert await refused(target, pki.credentials(client=pki.other_client)) == grpc.StatusCode.UNAVAILABLE
    assert await refused(target, pki.credentials(roots=pki.other_ca, client=pki.client)) == grpc.StatusCode.UNAVAILABLE
    assert await health(target, pki.credentials(client=pki.client)) == SERVING
    app = await new_app("mtls")
    async with channel(target, pki.credentials(client=pki.client)) as ch:
        stub = auth_service_pb2_grpc.AuthServiceStub(ch)
        issued = await stub.IssueToken(pb.IssueTokenRequest(user_id="bob"), metadata=backend(app))
        result = await stub.VerifyToken(pb.VerifyTokenRequest(token=issued.token), metadata=api_key_only(app))
    assert result.valid and result.user_id == "bob"


async def test_the_python_client_speaks_mutual_tls(mtls_server: RunningServer, pki: Pki, new_app: NewApp) -> None:
    app = await new_app("mtls-client")
    target = f"localhost:{mtls_server.port}"
    async with AuthClient(target, app.api_key, app.api_secret, credentials=pki.credentials(client=pki.client)) as c:
        issued = await c.issue_token("carol")
        assert (await c.verify_token(issued.token)).user_id == "carol"


def test_transport_and_description_name_files_never_keys(settings: Settings, pki: Pki) -> None:
    assert tls.transport(settings) == "plaintext" and tls.describe(settings) == "plaintext"
    with_tls = settings.with_overrides(tls_cert_file=pki.server_cert_file, tls_key_file=pki.server_key_file)
    assert tls.transport(with_tls) == "TLS"
    mutual = with_tls.with_overrides(tls_client_ca_file=pki.ca_file)
    assert tls.transport(mutual) == "mutual TLS"
    assert str(pki.server_cert_file) in tls.describe(mutual) and str(pki.ca_file) in tls.describe(mutual)
    assert str(pki.server_key_file) not in tls.describe(mutual)
    assert tls.server_credentials(settings) is None
    assert isinstance(tls.server_credentials(mutual), grpc.ServerCredentials)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTHSVC_TLS_CERT_FILE": "server.pem"}, "AUTHSVC_TLS_CERT_FILE is set but AUTHSVC_TLS_KEY_FILE is not"),
        ({"AUTHSVC_TLS_KEY_FILE": "server-key.pem"}, "AUTHSVC_TLS_KEY_FILE is set but AUTHSVC_TLS_CERT_FILE is not"),
        ({"AUTHSVC_TLS_CLIENT_CA_FILE": "ca.pem"}, "AUTHSVC_TLS_CLIENT_CA_FILE needs AUTHSVC_TLS_CERT_FILE"),
    ],
)
def test_tls_files_go_together(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def _bad_files(pki: Pki, tmp: Path) -> list[tuple[str, dict[str, Path], str, Path]]:
    """(case, TLS settings, setting named, file named) for every kind of wrong file."""
    garbage = tmp / "garbage.pem"
    garbage.write_text("not PEM at all\n")
    encrypted = tmp / "encrypted-key.pem"
    encrypted.write_bytes(
        pki.server.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_cert, ed_key_file = tmp / "ed.pem", tmp / "ed-key.pem"
    now = datetime.now(UTC)
    ed_cert.write_bytes(
        x509.CertificateBuilder()
        .subject_name(pki.server.certificate.subject)
        .issuer_name(pki.ca.certificate.subject)
        .public_key(ed_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(pki.ca.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    ed_key_file.write_bytes(
        ed_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    missing = tmp / "missing.pem"
    cert, key = pki.server_cert_file, pki.server_key_file
    return [
        ("missing cert", {"cert": missing, "key": key}, "AUTHSVC_TLS_CERT_FILE", missing),
        ("missing key", {"cert": cert, "key": missing}, "AUTHSVC_TLS_KEY_FILE", missing),
        ("missing client CA", {"cert": cert, "key": key, "ca": missing}, "AUTHSVC_TLS_CLIENT_CA_FILE", missing),
        ("cert not PEM", {"cert": garbage, "key": key}, "AUTHSVC_TLS_CERT_FILE", garbage),
        ("key not PEM", {"cert": cert, "key": garbage}, "AUTHSVC_TLS_KEY_FILE", garbage),
        ("client CA not PEM", {"cert": cert, "key": key, "ca": garbage}, "AUTHSVC_TLS_CLIENT_CA_FILE", garbage),
        ("a certificate given as key", {"cert": cert, "key": cert}, "AUTHSVC_TLS_KEY_FILE", cert),
        ("mismatched key", {"cert": cert, "key": pki.other_client_key_file}, "AUTHSVC_TLS_KEY_FILE", cert),
        ("encrypted key", {"cert": cert, "key": encrypted}, "AUTHSVC_TLS_KEY_FILE", encrypted),
        ("Ed25519 key", {"cert": ed_cert, "key": ed_key_file}, "AUTHSVC_TLS_KEY_FILE", ed_key_file),
        ("a directory", {"cert": tmp, "key": key}, "AUTHSVC_TLS_CERT_FILE", tmp),
    ]


async def test_wrong_tls_files_are_config_errors_naming_setting_and_file(
    store: Store, state: State, settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    for case, files, setting, named in _bad_files(pki, tmp_path):
        bad = settings.with_overrides(
            tls_cert_file=files["cert"], tls_key_file=files["key"], tls_client_ca_file=files.get("ca")
        )
        with pytest.raises(ConfigError) as failure:
            await start_server(store, state, bad, FakeClock())
        message = failure.value.message
        assert setting in message and str(named) in message, f"{case}: {message}"
        assert "\n" not in message and "PRIVATE KEY" not in message, f"{case}: {message}"


def test_serve_with_wrong_tls_settings_prints_one_line_and_exits_1(pki: Pki, tmp_path: Path) -> None:
    # Both fail before any database starts: the first in the settings, the second when serve checks the files.
    half = authsvc("serve", env=clean_env(AUTHSVC_TLS_CERT_FILE=str(pki.server_cert_file)), cwd=tmp_path)
    assert half.returncode == 1
    assert half.stderr == "authsvc: AUTHSVC_TLS_CERT_FILE is set but AUTHSVC_TLS_KEY_FILE is not: TLS needs both\n"
    mismatched = authsvc(
        "serve",
        env=clean_env(
            AUTHSVC_TLS_CERT_FILE=str(pki.server_cert_file), AUTHSVC_TLS_KEY_FILE=str(pki.other_client_key_file)
        ),
        cwd=tmp_path,
    )
    assert mismatched.returncode == 1, mismatched.stderr
    assert mismatched.stderr.startswith("authsvc: AUTHSVC_TLS_KEY_FILE: the key in ")
    assert mismatched.stderr.count("\n") == 1 and "Traceback" not in mismatched.stderr
    assert not (tmp_path / ".authsvc").exists(), "no embedded database was started"


async def test_authsvc_serve_with_mutual_tls_env_answers_tls_health_checks(
    database_url: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = clean_env(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_TLS_CERT_FILE=str(pki.server_cert_file),
        AUTHSVC_TLS_KEY_FILE=str(pki.server_key_file),
        AUTHSVC_TLS_CLIENT_CA_FILE=str(pki.ca_file),
    )
    async with serve(env, tmp_path_factory.mktemp("srv"), workers=2) as served:
        target = f"localhost:{served.port}"
        assert await health(target, pki.credentials(client=pki.client)) == SERVING
        # By address too, naming the certificate's host as a client that only knows the address would.
        ip_credentials = pki.credentials(client=pki.client)
        async with grpc.aio.secure_channel(
            served.target, ip_credentials, options=[("grpc.ssl_target_name_override", "localhost")]
        ) as ch:
            check = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
            assert (await check).status == SERVING
        assert await refused(target, None) == grpc.StatusCode.UNAVAILABLE
        assert await refused(target, pki.credentials()) == grpc.StatusCode.UNAVAILABLE
    assert served.process.returncode == 0, served.output
    transports = [r for r in served.records if r.get("transport")]
    assert len(transports) == 2 and all(r["transport"] == "mutual TLS" for r in transports), served.output
    assert "client certificates required" in transports[0]["message"]
    key_body = pki.server.key_pem.decode().splitlines()[1]
    assert key_body not in served.output and "PRIVATE KEY" not in served.output


async def test_a_port_of_each_kind_side_by_side(server: RunningServer, tls_server: RunningServer, pki: Pki) -> None:
    # The session's plaintext server is untouched by TLS settings of another server in the same process.
    plain, secure = f"127.0.0.1:{server.port}", f"localhost:{tls_server.port}"
    assert list(await asyncio.gather(health(plain, None), health(secure, pki.credentials()))) == [SERVING, SERVING]
    assert await refused(plain, pki.credentials()) == grpc.StatusCode.UNAVAILABLE


def readme_tls_grpcurl_blocks() -> list[str]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n### TLS\n", 1)[1].split("\n### ", 1)[0]
    return [block for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S) if "grpcurl" in block]


async def test_readme_tls_commands_work_as_printed(
    tls_server: RunningServer, mtls_server: RunningServer, pki: Pki, new_app: NewApp, tmp_path: Path
) -> None:
    tls_block, mtls_block = readme_tls_grpcurl_blocks()
    app = await new_app("readme-tls")
    async with channel(f"localhost:{tls_server.port}", pki.credentials()) as ch:
        stub = auth_service_pb2_grpc.AuthServiceStub(ch)
        token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
    shim = tmp_path / "grpcurl"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).parent / "grpcurl_shim.py"}" "$@"\n')
    shim.chmod(0o755)
    env = clean_env(PATH=f"{tmp_path}:{os.environ['PATH']}", API_KEY=app.api_key, TOKEN=token)

    async def run(block: str, server: RunningServer) -> tuple[int, str]:
        script = block.replace("localhost:50051", f"localhost:{server.port}")
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", script, cwd=pki.dir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, (out + err).decode()

    for block, server in ((tls_block, tls_server), (mtls_block, mtls_server)):
        code, output = await run(block, server)
        assert code == 0 and '"VERIFY_OUTCOME_VALID"' in output and '"userId": "alice"' in output, output
    code, output = await run(tls_block, mtls_server)  # no client certificate: refused
    assert code != 0 and "UNAVAILABLE" in output, output


def operations_tls_exec_probe() -> str:
    """The Python of the exec probe that docs/operations.md offers for a TLS port."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    section = docs.split("\n### TLS\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    script = block.split("- |\n", 1)[1]
    return "\n".join(line.removeprefix("        ") for line in script.splitlines())


async def test_the_documented_tls_exec_probe_checks_a_tls_port(
    tls_server: RunningServer, server: RunningServer, pki: Pki
) -> None:
    """Run as printed (the paths, port and certificate name of the test's PKI put in): SERVING on the TLS port
    exits 0; on a plaintext port it fails, as a probe must."""
    script = operations_tls_exec_probe()
    for printed in ("/etc/authsvc/tls/ca.crt", "localhost:50051", "authsvc-headless.authsvc.svc.cluster.local"):
        assert printed in script

    async def probe(port: int) -> int:
        filled = (
            script.replace("/etc/authsvc/tls/ca.crt", str(pki.ca_file))
            .replace("localhost:50051", f"localhost:{port}")
            .replace("authsvc-headless.authsvc.svc.cluster.local", "localhost")  # the name the test certificate has
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", filled, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return await asyncio.wait_for(process.wait(), 60)

    assert await probe(tls_server.port) == 0
    assert await probe(server.port) != 0
