# syntax=docker/dockerfile:1
# authsvc container image: `make image` builds it, `make image-check` checks what it can without an engine.
# Two stages: `build` installs the hash-locked dependencies of authsvc[server] (requirements.lock: no pgserver,
# the embedded database is a development extra) and the package into /opt/venv; the runtime stage copies only
# that venv onto a clean base and runs it as an unprivileged numeric user. No secrets are baked in: the database
# URL, key-encryption keys and operator tokens come from the environment / mounted files at run time (deploy/k8s).

# The base, pinned by digest: python:3.11-slim-bookworm as published in 2026-08 (a digest recorded in public
# material, not re-resolved here). `make pin-base` asks Docker Hub for the tag's current digest and writes it here;
# review and commit. Behind a registry mirror: --build-arg PYTHON_BASE=mirror.example/python@sha256:...
ARG PYTHON_BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_BASE} AS build

# Corporate build networks: a package index (a PyPI mirror; the lock's hashes still hold, every file is checked)
# and a CA bundle (PEM text, added to the system's) for a TLS-intercepting proxy or an internal index:
#   docker build --build-arg PIP_INDEX_URL=https://pypi.corp.example/simple \
#                --build-arg CA_BUNDLE="$(cat corp-ca.pem)" .
# Both stay in this stage: the runtime image holds neither.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG CA_BUNDLE=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_INDEX_URL=${PIP_INDEX_URL} \
    PIP_CERT=/etc/authsvc-build/ca-bundle.pem

SHELL ["/bin/sh", "-eu", "-c"]

# The CA bundle pip verifies the index with: the base's system roots, plus CA_BUNDLE when given.
RUN install -d /etc/authsvc-build \
    && cat /etc/ssl/certs/ca-certificates.crt > /etc/authsvc-build/ca-bundle.pem \
    && if [ -n "${CA_BUNDLE}" ]; then printf '%s\n' "${CA_BUNDLE}" >> /etc/authsvc-build/ca-bundle.pem; fi

# A venv without pip or setuptools of its own: the base image's pip installs into it (--python), so the
# runtime image carries no installer.
RUN python -m venv --without-pip /opt/venv

WORKDIR /src

# Dependencies first (their layer survives code changes): every file checked against requirements.lock's
# hashes (hash-checking mode also fails on any dependency the lock forgot), wheels only (no compiler here).
COPY requirements.lock ./
RUN python -m pip --python /opt/venv/bin/python install \
        --require-hashes --only-binary=:all: -r requirements.lock

# The package itself; its dependencies are already there. The generated protobuf stubs are committed under
# authsvc/v1, so no protoc is needed.
COPY pyproject.toml README.md ./
COPY authsvc ./authsvc
RUN python -m pip --python /opt/venv/bin/python install --no-deps . \
    && python -m pip --python /opt/venv/bin/python check \
    && /opt/venv/bin/authsvc --help > /dev/null \
    && if /opt/venv/bin/python -c 'import pgserver' 2> /dev/null; then echo "pgserver in the image" >&2; exit 1; fi


FROM ${PYTHON_BASE}

LABEL org.opencontainers.image.title="authsvc" \
      org.opencontainers.image.description="gRPC JWT token service for chat backends"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}"

# The unprivileged user, and the one directory it may write to: its home and working directory (the image has no
# embedded PostgreSQL: `authsvc serve` needs AUTHSVC_DATABASE_URL, and says so without it). Everything else stays
# root-owned, and Kubernetes mounts the root filesystem read-only with an emptyDir on /tmp. The base image's own
# pip and setuptools are not needed at run time.
RUN groupadd --system --gid 10001 authsvc \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/authsvc --no-create-home \
        --shell /usr/sbin/nologin authsvc \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/authsvc \
    && PIP_ROOT_USER_ACTION=ignore python -m pip uninstall --yes --quiet pip setuptools wheel

COPY --from=build /opt/venv /opt/venv

WORKDIR /var/lib/authsvc
USER 10001:10001

# 50051: gRPC (with grpc.health.v1.Health for probes); 8080: HTTP /metrics and /.well-known/jwks/<api_key>.json
EXPOSE 50051 8080

ENTRYPOINT ["authsvc"]
CMD ["serve"]
