# syntax=docker/dockerfile:1
#
# vapi-calendar-proxy: build with `docker build -t vapi-calendar-proxy .` (see docs/image.md).
# scripts/build-image builds and smoke-tests it with podman where the base's registry is unreachable.
# Every stage shares one base so the venv's interpreter path (/usr/local/bin/python3.11) exists at runtime.
# Python 3.11 on Debian 12: the Python CI tests with, on the Debian release that ships it.
FROM python:3.11.14-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore


# The dependencies alone, from the hash-pinned lock: this layer changes only with requirements.lock.
# The venv gets no pip or setuptools; the base image's pip installs into it (--python).
FROM base AS deps
COPY requirements.lock /tmp/
# Wheels only: no compiler in the image, and no sdist's build step running at install time.
# pip compiles the .pyc files now: the runtime root filesystem is read-only and cannot cache them.
RUN python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-deps --require-hashes --only-binary :all: \
       -r /tmp/requirements.lock


# The proxy's own wheel, built with the locked setuptools (no unpinned download at build time).
FROM base AS wheel
COPY requirements-build.lock /tmp/
RUN python -m venv --without-pip /opt/build \
    && python -m pip --python /opt/build/bin/python install --no-deps --require-hashes -r /tmp/requirements-build.lock
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
RUN python -m pip --python /opt/build/bin/python wheel --no-deps --no-build-isolation --wheel-dir /wheels .


FROM base AS runtime

LABEL org.opencontainers.image.title="vapi-calendar-proxy" \
      org.opencontainers.image.description="Vapi server URL that answers assistant-requests with a per-user Google Calendar assistant, via Nango" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd. The
# name is one no Debian base system has (base-passwd already defines "proxy", UID/GID 13).
RUN groupadd --gid 10001 vapi-calendar-proxy \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin vapi-calendar-proxy

# Layer 1: the dependencies (reused until requirements.lock changes). Layers 2 and 3: the proxy's wheel and
# its install, about 1 MB. A COPY, not RUN --mount=from=wheel: buildah's layer cache does not see a mounted
# stage change, and would reuse the old install after a code change.
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /wheels /tmp/wheels
RUN python -m pip --python /opt/venv/bin/python install --no-deps --no-index /tmp/wheels/*.whl \
    && rm -r /tmp/wheels \
    && /opt/venv/bin/vapi-calendar-proxy --version
ENV PATH=/opt/venv/bin:$PATH

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

# slim has no curl: ask the interpreter. /livez needs no auth and answers while the process runs.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=2)"]

# The config is mounted (a file, or a directory from a ConfigMap); secrets come from the environment:
# VAPI_SERVER_SECRET, NANGO_SECRET_KEY, NANGO_WEBHOOK_SIGNING_KEY (optional).
ENTRYPOINT ["vapi-calendar-proxy"]
CMD ["serve", "--config", "/etc/vapi-calendar-proxy/config.yaml", "--host", "0.0.0.0", "--port", "8080"]
