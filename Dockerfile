# syntax=docker/dockerfile:1
#
# parallel-dispatch as a shared HTTP server.
#
#   docker build -t parallel-dispatch .
#   docker run -d -p 8765:8765 -v parallel-dispatch-data:/data \
#       -e PARALLEL_DISPATCH_AUTH_TOKEN="$(openssl rand -hex 32)" parallel-dispatch
#
# The container listens on 0.0.0.0 so that the published port is reachable, and the server
# refuses to bind anything but loopback without a bearer token: you MUST pass
# `-e PARALLEL_DISPATCH_AUTH_TOKEN=...` (clients then send `Authorization: Bearer ...`).
# Coordinations live in SQLite on the /data volume; point PARALLEL_DISPATCH_DATABASE_URL at
# PostgreSQL (postgresql+psycopg://...) when several servers share one database.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a wheel of this project, installed with its dependencies into a venv ----------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server

RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir "$(ls /wheels/parallel_dispatch-*.whl)[postgres,grpc]"

# --- runtime: the venv only, run by an unprivileged user ------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 dispatch \
    && useradd --system --uid 10001 --gid dispatch --no-create-home \
        --home-dir /data --shell /usr/sbin/nologin dispatch \
    && mkdir /data \
    && chown dispatch:dispatch /data

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    PARALLEL_DISPATCH_DATABASE_URL=sqlite:////data/parallel-dispatch.db

VOLUME ["/data"]
WORKDIR /data
# Numeric, so that runtimes can verify it is not root (e.g. Kubernetes runAsNonRoot).
USER 10001:10001
EXPOSE 8765

# The slim image has no curl; the venv's Python does the probe. To move the port, set
# `-e PARALLEL_DISPATCH_PORT=...` (the server and this probe both read it) rather than adding
# --port to the command.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % os.environ.get('PARALLEL_DISPATCH_PORT', '8765'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]

ENTRYPOINT ["parallel-dispatch"]
CMD ["serve", "--http", "--host", "0.0.0.0"]
