"""`make version VERSION=x.y.z`: sets the one version of authsvc everywhere it is written.

pyproject.toml's `version` is the source; the Node client (clients/node/package.json and its package-lock.json)
carries the same, since both clients are built from the same protos/. tests/test_packaging.py checks that they
agree with each other and with the newest entry of CHANGELOG.md (which this does not write: say what changed).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "clients" / "node"


def main(version: str) -> None:
    if not re.fullmatch(r"\d+\.\d+\.\d+(?:[-.]?[0-9A-Za-z.]+)?", version):
        raise SystemExit(f"set_version: {version!r} is not a version like 1.2.3")
    pyproject = ROOT / "pyproject.toml"
    text, count = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{version}"', pyproject.read_text(), count=1)
    if count != 1:
        raise SystemExit('set_version: pyproject.toml has no `version = "..."` line')
    pyproject.write_text(text)
    package = json.loads((NODE / "package.json").read_text())
    package["version"] = version
    (NODE / "package.json").write_text(json.dumps(package, indent=2, ensure_ascii=False) + "\n")
    lock = json.loads((NODE / "package-lock.json").read_text())
    lock["version"] = lock["packages"][""]["version"] = version
    (NODE / "package-lock.json").write_text(json.dumps(lock, indent=2, ensure_ascii=False) + "\n")
    print(f"version {version}: pyproject.toml, clients/node/package.json, package-lock.json; add it to CHANGELOG.md")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/set_version.py x.y.z")
    main(sys.argv[1])
