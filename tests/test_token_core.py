"""The token core is a library: it imports with cryptography and PyJWT alone, without the server's machinery.

"Verify without a round trip" runs these same rules inside other services' processes, which install neither
grpc nor asyncpg nor prometheus-client.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TOKEN_CORE = (
    "authsvc.tokens",
    "authsvc.jws",
    "authsvc.keys",
    "authsvc.verifier",
    "authsvc.credentials",
    "authsvc.revocations",
)
SERVER_ONLY = ("grpc", "google", "asyncpg", "prometheus_client", "pgserver", "uvloop")

_BLOCKING_IMPORTER = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed here")
        return None
sys.meta_path.insert(0, Blocked())
sys.path.insert(0, {root!r})
import importlib
importlib.import_module({module!r})
leaked = sorted({{m.split(".")[0] for m in sys.modules}} & set({blocked!r}))
assert not leaked, leaked
"""


@pytest.mark.parametrize("module", TOKEN_CORE)
def test_the_token_core_imports_without_grpc_asyncpg_or_prometheus(module: str) -> None:
    code = _BLOCKING_IMPORTER.format(blocked=SERVER_ONLY, root=str(ROOT), module=module)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_package_itself_imports_nothing() -> None:
    code = (
        "import sys; sys.path.insert(0, {root!r}); import authsvc; "
        "print(sorted(m for m in sys.modules if m.startswith('authsvc')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code.format(root=str(ROOT))], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "['authsvc']", result.stdout + result.stderr
