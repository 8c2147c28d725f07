# syntax=docker/dockerfile:1
# authsvc container image: `make image` builds it, `make image-check` checks what it can without an engine.
# Two stages: `build` installs the hash-locked dependencies and the package into /opt/venv; the runtime stage
# copies only that venv onto a clean base and runs it as an unprivileged numeric user. No secrets are baked in:
# the database URL, key-encryption keys and operator tokens come from the environment / mounted files at run
# time (deploy/k8s). Pin the base by digest as well when you release (FROM python:...@sha256:...).

FROM python:3.11.17-slim-trixie AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

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
    && /opt/venv/bin/authsvc --help > /dev/null


FROM python:3.11.17-slim-trixie

LABEL org.opencontainers.image.title="authsvc" \
      org.opencontainers.image.description="gRPC JWT token service for chat backends"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}"

# The unprivileged user, and the one directory it may write to: the working directory, where `authsvc serve`
# without AUTHSVC_DATABASE_URL keeps its embedded PostgreSQL (laptops only). Everything else stays root-owned,
# and Kubernetes mounts the root filesystem read-only with an emptyDir on /tmp. The base image's own pip and
# setuptools are not needed at run time.
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
