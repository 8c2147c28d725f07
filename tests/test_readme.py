"""The README's quickstart works as printed: its shell blocks run against a real server.

They run the real grpcurl when one is on PATH; else `tests/grpcurl_shim.py` stands in for it (the project's
dependencies do not bring grpcurl), which like grpcurl learns every type through server reflection and prints
what grpcurl prints.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from authsvc.server import RunningServer
from tests.processes import clean_env

ROOT = Path(__file__).resolve().parent.parent


def quickstart_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


async def run_shell(script: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def grpcurl_command() -> list[str]:
    """The real grpcurl when one is on PATH, else the shim."""
    real = shutil.which("grpcurl")
    return [real] if real else [sys.executable, str(ROOT / "tests" / "grpcurl_shim.py")]


def path_with_grpcurl(directory: Path) -> str:
    """PATH for the README's commands: as it is when grpcurl is on it, else with the shim as `grpcurl` first."""
    if shutil.which("grpcurl"):
        return os.environ["PATH"]
    shim = directory / "grpcurl"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "grpcurl_shim.py"}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return f"{directory}:{os.environ['PATH']}"


async def test_readme_quickstart_works_as_printed(server: RunningServer, database_url: str, tmp_path: Path) -> None:
    blocks = quickstart_blocks()
    assert blocks[0].strip() == "make run", "the quickstart starts with make run"
    env = clean_env(PATH=path_with_grpcurl(tmp_path), AUTHSVC_DATABASE_URL=database_url)
    script = "set -euo pipefail\n" + "\necho '-----'\n".join(blocks[1:])
    script = script.replace("localhost:50051", f"localhost:{server.port}")
    script = script.replace(".venv/bin/authsvc", f'"{sys.executable}" -m authsvc')
    code, out, err = await run_shell(script, env)
    assert code == 0, err
    outputs = out.split("-----\n")
    create, issue, verify, revoke_and_verify = outputs
    assert create == ""
    assert '"token": "' in issue and '"key_id": "' in issue
    assert '"valid": true' in verify and '"VERIFY_OUTCOME_VALID"' in verify and '"user_id": "alice"' in verify
    readme = (ROOT / "README.md").read_text()
    assert '`"user_id": "alice"`' in readme, "the README quotes the answer as grpcurl prints it"
    assert '"revocations": [' in revoke_and_verify
    assert '"VERIFY_OUTCOME_REVOKED"' in revoke_and_verify and '"valid"' not in revoke_and_verify


async def test_readme_describe_and_list_work(server: RunningServer) -> None:
    shim = [*grpcurl_command(), "-plaintext"]
    target = f"localhost:{server.port}"
    process = await asyncio.create_subprocess_exec(*shim, target, "list", stdout=asyncio.subprocess.PIPE)
    listed, _ = await process.communicate()
    assert "authsvc.v1.AuthService" in listed.decode().split()
    process = await asyncio.create_subprocess_exec(
        *shim, target, "describe", "authsvc.v1.AuthService", stdout=asyncio.subprocess.PIPE
    )
    described, _ = await process.communicate()
    for method in ("IssueToken", "VerifyToken", "RevokeUser", "RevokeApp", "ClearRevocation"):
        assert f"rpc {method} (" in described.decode()


def readme_table_names(heading: str) -> set[str]:
    """The names in the first column (`code`) of the tables under a README heading."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    cells = re.findall(r"^\| ([^|]+) \|", section, flags=re.M)
    return {name for cell in cells for name in re.findall(r"`([A-Za-z_]+)`", cell)}


def test_the_settings_table_lists_every_variable_authsvc_reads() -> None:
    from authsvc.config import variable_names

    listed = readme_table_names("Settings")
    assert variable_names() - listed == set(), "settings missing from the README's table"
    assert listed - variable_names() == set(), "the README lists settings authsvc does not read"


def test_the_api_tables_list_every_rpc() -> None:
    from authsvc.v1 import admin_service_pb2, auth_service_pb2

    listed = readme_table_names("The API") | readme_table_names("Operators")
    for module, service in ((auth_service_pb2, "AuthService"), (admin_service_pb2, "AdminService")):
        methods = {method.name for method in module.DESCRIPTOR.services_by_name[service].methods}
        assert methods - listed == set(), f"{service} RPCs missing from the README"


def operator_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Operators\n", 1)[1].split("\n## ", 1)[0]
    blocks: list[str] = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return blocks[0]


def test_the_operator_example_keeps_its_token_file_private_and_outside_the_repository(tmp_path: Path) -> None:
    lines = operator_example().splitlines()[:2]  # make the directory and write the token; the third starts a server
    script = "set -euo pipefail\n" + "\n".join(lines).replace(".venv/bin/authsvc", f'"{sys.executable}" -m authsvc')
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=clean_env(HOME=str(tmp_path)), capture_output=True)
    assert done.returncode == 0, done.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 1 and not written[0].resolve().is_relative_to(ROOT)
    assert stat.S_IMODE(written[0].stat().st_mode) == 0o600
    assert re.fullmatch(r"alice:\S{32,}\n", written[0].read_text())
