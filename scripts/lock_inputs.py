"""Writes the inputs of `make lock`: authsvc's requirements with the given extras, as pip-compile reads them.

    python scripts/lock_inputs.py server > server.in

pyproject.toml's extras name each other (`server` includes `authsvc[fast]`, `dev` includes
`authsvc[server,embedded,fast]`), so that a dependency added to one extra reaches every install that includes it.
pip-compile, given pyproject.toml, resolves such a self-reference to the checkout itself (an unhashable
`authsvc @ file:///...` line in the lock) and loses environment markers; so the references are expanded here, and
pip-compile gets plain requirements.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SELF = re.compile(r"^authsvc\[([^\]]*)\]\s*$")


def requirements(extras: list[str]) -> list[str]:
    """The core dependencies and those of the extras (and of the extras they name), in order, once each."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found: list[str] = list(project["dependencies"])
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"lock_inputs: pyproject.toml has no extra {extra!r}")
        seen.add(extra)
        for requirement in optional[extra]:
            if match := SELF.match(requirement):
                pending.extend(name.strip() for name in match.group(1).split(","))
            elif requirement not in found:
                found.append(requirement)
    return found


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
