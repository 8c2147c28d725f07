"""`make pin-base`: pins the Dockerfile's base image to the current digest of its tag on Docker Hub.

    python scripts/pin_base.py [python:3.11-slim-bookworm]

Asks the registry (registry-1.docker.io, anonymous pull token from auth.docker.io) for the tag's manifest index
digest, the one `docker buildx imagetools inspect python:3.11-slim-bookworm` prints as Digest, and rewrites the
`ARG PYTHON_BASE=...` line of the Dockerfile with it. Nothing is pulled. Review the diff and commit it; a build
then uses exactly that image until the next pin, whatever the tag moves to.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
ARG = re.compile(r"(?m)^ARG PYTHON_BASE=(?P<image>[^@\s]+)(?:@sha256:[0-9a-f]{64})?$")
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def digest_of(image: str) -> str:
    """The digest Docker Hub answers for `name:tag` (official images: `library/name`)."""
    name, _, tag = image.partition(":")
    repository = name if "/" in name else f"library/{name}"
    token_url = f"https://auth.docker.io/token?service=registry.docker.io&scope=repository:{repository}:pull"
    with urllib.request.urlopen(token_url, timeout=30) as answer:
        token = json.load(answer)["token"]
    request = urllib.request.Request(
        f"https://registry-1.docker.io/v2/{repository}/manifests/{tag or 'latest'}",
        method="HEAD",
        headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        digest = answer.headers.get("Docker-Content-Digest", "")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise SystemExit(f"pin_base: the registry answered no digest for {image}")
    return str(digest)


def main() -> None:
    text = DOCKERFILE.read_text()
    match = ARG.search(text)
    if match is None:
        raise SystemExit("pin_base: the Dockerfile has no `ARG PYTHON_BASE=` line")
    image = sys.argv[1] if len(sys.argv) > 1 else match.group("image")
    try:
        pinned = f"{image}@{digest_of(image)}"
    except OSError as exc:  # no network, DNS, a proxy refusing, an HTTP error
        raise SystemExit(
            f"pin_base: cannot ask Docker Hub for {image} ({getattr(exc, 'reason', exc)}); where an engine can reach "
            f"it, `docker buildx imagetools inspect {image}` prints the digest to pin"
        ) from None
    DOCKERFILE.write_text(ARG.sub(f"ARG PYTHON_BASE={pinned}", text, count=1))
    print(f"Dockerfile: FROM {pinned}")


if __name__ == "__main__":
    main()
