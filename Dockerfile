# syntax=docker/dockerfile:1
# Corral: one image for `corral serve` (API + reconciler), `corral migrate` and
# `corral simulator`. Multi-stage: the build stage has pip and the build backend, the
# runtime stage only the virtual environment, and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/corral
# Dependencies first: pyproject.toml's runtime dependencies, pinned by the lock (as
# constraints, so the lock's development tools are not installed), so that a code change does
# not rebuild this layer.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > runtime-requirements.txt \
 && /opt/corral/bin/pip install --constraint requirements.lock --requirement runtime-requirements.txt
# The package itself; it carries the Alembic migrations as `app.migrations` (pyproject.toml).
COPY README.md ./
COPY app/ app/
COPY migrations/ migrations/
RUN /opt/corral/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="corral" \
      org.opencontainers.image.description="A control plane in front of the CodeSandbox VM sandbox API"
ENV PATH=/opt/corral/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CORRAL_HOST=0.0.0.0 \
    CORRAL_PORT=8000 \
    CORRAL_DATA_DIR=/var/lib/corral
RUN groupadd --system --gid 10001 corral \
 && useradd --system --uid 10001 --gid corral --home-dir /var/lib/corral --create-home corral
COPY --from=build /opt/corral /opt/corral
USER 10001:10001
WORKDIR /var/lib/corral
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CORRAL_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["corral"]
CMD ["serve"]
