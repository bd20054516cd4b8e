# syntax=docker/dockerfile:1
#
# vapi-calendar-proxy: build with `docker build -t vapi-calendar-proxy .` (see docs/deployment.md).
# Both stages share one base so the venv's interpreter path (/usr/local/bin/python3.11) exists at runtime.
FROM python:3.11.14-slim-trixie AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1


FROM base AS builder

# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is installed here.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# pip compiles the .pyc files now: the runtime root filesystem is read-only and cannot cache them.
RUN pip install --no-cache-dir . \
    && vapi-calendar-proxy --help > /dev/null


FROM base AS runtime

LABEL org.opencontainers.image.title="vapi-calendar-proxy" \
      org.opencontainers.image.description="Vapi server URL that answers assistant-requests with a per-user Google Calendar assistant, via Nango" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 proxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin proxy

COPY --from=builder /opt/venv /opt/venv
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
