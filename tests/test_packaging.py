"""The clients as a platform team installs them, outside this repository.

- Python: the wheel of `pip install authsvc`, installed without extras into a fresh venv (pip from the configured
  index), holds the client and the LocalVerifier on grpcio, protobuf and cryptography alone, and calls the
  session's real server: the README example and the sync example of docs/clients.md as printed, a LocalVerifier.
  `authsvc serve` there says in one line what to install.
- Node: the tarball of `npm pack`, installed into an empty project in a temp dir (its dependencies from the npm
  registry), calls the server: the README example and the client README's LocalVerifier example as printed.
- One version: pyproject.toml, the Node package and the changelog agree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from authsvc.server import RunningServer
from tests.conftest import NewApp
from tests.test_client import readme_python_example
from tests.test_node_client import NODE_CLIENT, base_env, node_tool, readme_node_example, run

ROOT = Path(__file__).resolve().parent.parent

# What `pip install authsvc` may bring: the three the issue names and their own dependencies.
CLIENT_DISTRIBUTIONS = {"authsvc", "grpcio", "protobuf", "cryptography", "cffi", "pycparser", "typing-extensions"}
# The server's (extras server and embedded): none of them may be needed by the client.
SERVER_MODULES = (
    "asyncpg",
    "jwt",
    "prometheus_client",
    "pgserver",
    "uvloop",
    "grpc_status",
    "grpc_health",
    "grpc_reflection",
    "google.rpc",
)


def pyproject_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def test_the_clients_proto_and_changelog_share_one_version() -> None:
    version = pyproject_version()
    package = json.loads((NODE_CLIENT / "package.json").read_text())
    lock = json.loads((NODE_CLIENT / "package-lock.json").read_text())
    assert package["version"] == version, "clients/node/package.json: run `make version VERSION=...`"
    assert lock["version"] == lock["packages"][""]["version"] == version, "clients/node/package-lock.json"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[?(\d+\.\d+\.\d+[^\]\s]*)\]?", changelog, flags=re.M)
    assert released and released[0] == version, "CHANGELOG.md's newest entry names another version"


def locked(lock: str) -> set[str]:
    """The normalised names a lock file pins."""
    text = (ROOT / lock).read_text()
    return {normalised(name) for name in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, flags=re.M)}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(*extras: str) -> set[str]:
    """The names of what `pip install authsvc[extras]` asks for, as `make lock` expands them."""
    spec = importlib.util.spec_from_file_location("lock_inputs", ROOT / "scripts" / "lock_inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: list[str] = module.requirements(list(extras))
    return {normalised(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]) for requirement in found}


def test_the_locks_hold_what_their_extras_ask_for() -> None:
    """requirements.lock (the image) is authsvc[server]: every one of its requirements pinned, no pgserver;
    requirements-dev.lock (`make install`) is authsvc[dev]. A requirement added without `make lock` fails here."""
    image, dev = locked("requirements.lock"), locked("requirements-dev.lock")
    assert requirement_names("server") - image == set(), "run `make lock`"
    assert {"pgserver", "pytest", "ruff"} & image == set(), "the image's lock holds development packages"
    assert requirement_names("dev") - dev == set(), "run `make lock`"
    assert {"pgserver", "pynacl", "asyncpg"} <= dev
    assert requirement_names() == {"grpcio", "protobuf", "cryptography"}, "pip install authsvc is the client"


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == m or name.startswith(m + ".") for m in {modules!r}):
            raise ImportError(f"the client imported {{name}}")
sys.meta_path.insert(0, Block())
"""


def test_the_client_modules_import_without_the_server_dependencies() -> None:
    """A quick check in this venv (the wheel test below is the real one): the client's modules load with the
    server's packages hidden."""
    script = BLOCKER.format(modules=SERVER_MODULES) + (
        "import authsvc.client, authsvc.local_verifier, authsvc.tokens, authsvc.verifier\n"
        "from authsvc.client import AuthClient, LocalVerifier, SyncAuthClient\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_serve_without_a_database_url_or_the_embedded_extra_says_what_to_install(tmp_path: Path) -> None:
    """pgserver hidden (a module of that name on PYTHONPATH that fails to import, as an absent one does): one line,
    and nothing written (no key made for a database that cannot start)."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "pgserver.py").write_text("raise ImportError('No module named pgserver', name='pgserver')\n")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env["PYTHONPATH"] = str(hidden)
    done = subprocess.run(
        [sys.executable, "-m", "authsvc", "serve", "--port", "0", "--http-port", "0"],
        env=env, cwd=work, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "pip install 'authsvc[embedded]'" in done.stderr, done.stderr
    assert "AUTHSVC_DATABASE_URL" in done.stderr and "Traceback" not in done.stderr
    assert list(work.iterdir()) == []


def docs_sync_example() -> str:
    """The blocking client's example of docs/clients.md."""
    docs = (ROOT / "docs" / "clients.md").read_text()
    section = docs.split("### Without asyncio: `SyncAuthClient`", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section has one example"
    return str(blocks[0])


LOCAL_VERIFIER_SCRIPT = """
import asyncio, os, sys
from authsvc.client import AuthClient, LocalVerifier, VerifyOutcome

async def main() -> None:
    key, secret = os.environ["API_KEY"], os.environ["API_SECRET"]
    target = sys.argv[1]
    async with AuthClient(target, key, secret) as client, LocalVerifier(
        target, key, secret, hs256_secret=secret
    ) as verifier:
        token = (await client.issue_token("bob")).token
        print(verifier.verify(token).outcome.name, verifier.verify(token).user_id)
        await client.revoke_users(["bob"])
        for _ in range(200):
            if verifier.verify(token).outcome is not VerifyOutcome.VALID:
                break
            await asyncio.sleep(0.05)
        print(verifier.verify(token).outcome.name)

asyncio.run(main())
"""


async def command(*args: str, cwd: Path, env: dict[str, str], limit: float = 600) -> str:
    code, out, err = await run(*args, cwd=cwd, env=env, limit=limit)
    assert code == 0, f"{' '.join(args)} failed ({code}):\n{out}\n{err}"
    return out


@pytest.mark.slow
async def test_the_wheel_without_extras_is_a_working_client(
    server: RunningServer, new_app: NewApp, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "VIRTUAL_ENV", "PYTHON"))}
    # The wheel, built from a copy of what the package is made of (the build writes beside its sources).
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "authsvc", source / "authsvc", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--quiet"]
    await command(
        *pip,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(tmp_path / "dist"),
        str(source),
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = (tmp_path / "dist").glob("authsvc-*.whl")
    assert wheel.name.startswith(f"authsvc-{pyproject_version()}-")

    # A fresh venv, and `pip install` of the wheel without extras, from the index pip is configured with.
    await command(sys.executable, "-m", "venv", str(tmp_path / "venv"), cwd=tmp_path, env=env)
    python = str(tmp_path / "venv" / "bin" / "python")
    await command(python, "-m", "pip", "install", "--quiet", str(wheel), cwd=tmp_path, env=env)
    listed = json.loads(await command(python, "-m", "pip", "list", "--format=json", cwd=tmp_path, env=env))
    installed = {item["name"].lower().replace("_", "-") for item in listed} - {"pip", "setuptools"}
    assert installed <= CLIENT_DISTRIBUTIONS, f"pip install authsvc brought {installed - CLIENT_DISTRIBUTIONS}"
    assert {"authsvc", "grpcio", "protobuf", "cryptography"} <= installed

    app = await new_app("wheel-client")
    target = f"localhost:{server.port}"
    env.update(API_KEY=app.api_key, API_SECRET=app.api_secret)
    work = tmp_path / "work"  # not the repository: the venv's authsvc, not the checkout's, is imported
    work.mkdir()
    for name, script, expected in [
        ("readme", readme_python_example(), "VALID alice\nREVOKED\n"),
        ("sync", docs_sync_example(), "VALID alice\nREVOKED\n"),
    ]:
        assert "localhost:50051" in script
        (work / f"{name}.py").write_text(script.replace("localhost:50051", target))
        assert await command(python, f"{name}.py", cwd=work, env=env, limit=60) == expected, name
    (work / "local.py").write_text(LOCAL_VERIFIER_SCRIPT)
    assert await command(python, "local.py", target, cwd=work, env=env, limit=60) == "VALID bob\nREVOKED\n"
    where = await command(python, "-c", "import authsvc; print(authsvc.__file__)", cwd=work, env=env)
    assert where.startswith(str(tmp_path / "venv")), where

    # The server needs its extra, and says so in one line.
    code, out, err = await run(str(tmp_path / "venv" / "bin" / "authsvc"), "serve", cwd=work, env=env, limit=60)
    assert code != 0 and out == ""
    assert len(err.splitlines()) == 1 and "pip install 'authsvc[server]'" in err, err


@pytest.mark.slow
async def test_the_packed_node_client_works_in_another_project(
    server: RunningServer, new_app: NewApp, tmp_path: Path
) -> None:
    env = base_env()
    npm = node_tool("npm")
    packed = tmp_path / "packed"
    packed.mkdir()
    out = await command(*npm, "pack", "--pack-destination", str(packed), cwd=NODE_CLIENT, env=env, limit=120)
    (tarball,) = packed.glob("*.tgz")
    assert tarball.name == f"authsvc-client-{pyproject_version()}.tgz", out
    assert not (NODE_CLIENT / "protos" / "authsvc").exists(), "postpack leaves the source tree as it was"
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    for needed in ("index.js", "local_verifier.js", "protos/authsvc/v1/auth_service.proto"):
        assert f"package/{needed}" in names
    assert not any(name.startswith(("package/test/", "package/bench/")) for name in names), names

    # An empty project elsewhere; the tarball, its dependencies from the npm registry.
    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "platform-team", "private": True}))
    await command(*npm, "install", "--no-audit", "--no-fund", str(tarball), cwd=project, env=env, limit=600)
    installed = project / "node_modules" / "@authsvc" / "client"
    assert installed.is_dir() and not installed.is_symlink()

    app = await new_app("packed-node-client")
    env.update(API_KEY=app.api_key, API_SECRET=app.api_secret)
    local_section = (NODE_CLIENT / "README.md").read_text().split("## Verify in your own process: LocalVerifier", 1)
    (local_example,) = re.findall(r"```js\n(.*?)```", local_section[1].split("\n## ", 1)[0], flags=re.S)
    for name, script, expected in [
        ("readme", readme_node_example(), "VALID alice\nREVOKED\n"),
        ("local", local_example, "VALID alice\nrevoked: alice\nREVOKED\n"),
    ]:
        assert 'require("@authsvc/client")' in script and "localhost:50051" in script
        (project / f"{name}.js").write_text(script.replace("localhost:50051", f"localhost:{server.port}"))
        code, out, err = await run(*node_tool("node"), f"{name}.js", cwd=project, env=env, limit=60)
        assert code == 0, err
        assert out == expected, name
