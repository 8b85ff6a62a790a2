# syntax=docker/dockerfile:1
# tactical-marl worker: CPU-only PyTorch, models verified and compiled at build time, non-root, tini as PID 1.
# Build: docker-compose build tactical-marl   (or: docker build -f tactical.Dockerfile -t tactical-marl
#        --build-arg TACTICAL_COMMIT=$(git describe --always --dirty --abbrev=12 --exclude='*') .)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# The CPU wheel index first: the project's torch range is then already satisfied and no CUDA wheel is pulled.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && python -c "import torch, sys; sys.exit('CUDA build of torch in the image' if torch.version.cuda else 0)"

WORKDIR /src
COPY pyproject.toml README* ./
COPY worker/ worker/
COPY tacticalctl/ tacticalctl/
COPY models/ models/
# py-spy: the runbook's CPU profiling of the running worker (PID 1 is tini: the runbook's commands name its child).
RUN pip install --no-cache-dir . py-spy==0.4.1

# Re-verify the committed bundle (manifest hashes) and compile it for this torch build; never retrain here.
RUN python -m models.compile --verify models/tactical --log /tmp/jit_compilation.log --out /app/models/jit \
    && grep -q "JIT compilation successful" /tmp/jit_compilation.log


FROM ${PYTHON_IMAGE} AS runtime

# tini is PID 1: it forwards SIGTERM to the worker (which drains in-flight events) and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tactical \
    && useradd --system --uid 10001 --gid tactical --no-create-home --shell /usr/sbin/nologin tactical \
    && mkdir -p /backups \
    && chown tactical:tactical /backups

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TACTICAL_HTTP_ADDR=0.0.0.0:8001 \
    TACTICAL_WORKER_URL=http://127.0.0.1:8001 \
    TACTICAL_MODELS_DIR=/app/models/jit \
    TACTICAL_REPORT_DIR=/backups/reports

COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=tactical:tactical /app/models/jit /app/models/jit
COPY --from=build --chown=tactical:tactical /tmp/jit_compilation.log /tmp/jit_compilation.log

WORKDIR /app
USER 10001:10001
EXPOSE 8001

# tacticalctl health: 0 ok, 1 warning (degraded still serves), 2 critical/unreachable, 3 unknown.
# Docker knows only healthy (0) and unhealthy (1), so degraded counts as healthy, like GET /health's 200.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "tacticalctl health; test $? -le 1"]

STOPSIGNAL SIGTERM
# The commit this image was built from, for `--version`, /health and tactical_build_info (the image has no git
# history): `TACTICAL_COMMIT=$(git describe --always --dirty --abbrev=12 --exclude='*') docker-compose build`.
# Last: a new commit rebuilds only this layer.
ARG TACTICAL_COMMIT=""
ENV TACTICAL_BUILD_COMMIT=${TACTICAL_COMMIT}
LABEL org.opencontainers.image.revision=${TACTICAL_COMMIT}

ENTRYPOINT ["tini", "--", "tactical-worker"]
