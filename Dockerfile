# syntax=docker/dockerfile:1
# kpi-monitor daemon image.
#   docker build -t kpi-monitor:0.1.0 --build-arg VERSION=0.1.0 .
#   docker run --read-only --tmpfs /tmp -v kpimon-state:/var/lib/kpi-monitor \
#     -v "$PWD/config.yaml:/etc/kpi-monitor/config.yaml:ro" -p 9108:9108 kpi-monitor:0.1.0
# Runs as UID/GID 10001, writes only to /tmp and /var/lib/kpi-monitor (the state volume), so it
# works with a read-only root filesystem. Validated by hadolint (tests/test_dockerfile.py).

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# ---- build: a virtualenv with the dependencies, then the package -------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer stays cached until they change.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# Then the package itself (no dependency resolution: they are all installed above).
COPY README.md ./
COPY monitor ./monitor
RUN pip install --no-cache-dir --no-deps . \
    && python -m compileall -q /opt/venv/lib \
    && kpi-monitor --help > /dev/null
# The detection kernels compiled now (numba), so no pod spends its first seconds compiling: the
# runtime copies this cache into /tmp at start (monitor/detection/compiled.py).
RUN KPIMON_NUMBA_CACHE=/opt/numba-seed python -m monitor.detection

# ---- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="kpi-monitor" \
      org.opencontainers.image.description="KPI anomaly monitor daemon: seasonal baselines on warehouse metrics, Prometheus metrics, Slack and Alertmanager alerts, deployment awareness" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="README.md, section Install on Kubernetes" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed numeric user (Kubernetes runAsNonRoot can check a numeric UID), a home in /tmp
# (DuckDB and matplotlib write caches under $HOME) and the state directory it owns.
RUN groupadd --system --gid 10001 kpimon \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin kpimon \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/kpi-monitor

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/numba-seed /opt/numba-seed

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    KPIMON_NUMBA_SEED=/opt/numba-seed \
    KPIMON_LOG_FORMAT=json \
    KPIMON_CONFIG=/etc/kpi-monitor/config.yaml

USER 10001:10001
WORKDIR /var/lib/kpi-monitor
VOLUME ["/var/lib/kpi-monitor"]
EXPOSE 9108

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]

ENTRYPOINT ["kpi-monitor", "run"]
