# syntax=docker/dockerfile:1
# LabManager: gunicorn (web), daphne (asgi) and the django-q2 cluster run from this one image, each with
# its bin/serve command line (deploy/docker-compose.yml).
# Build: docker build -t labmanager:latest .     Runbook: docs/operations.md

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# --- assets: the dashboard's browser libraries (Chart.js) from package-lock.json, no CDN ------------
# bin/vendor-static.sh: npm ci, then the served files copied into static/vendor/ (as `make setup` does).
FROM ${NODE_IMAGE} AS assets
WORKDIR /src
COPY package.json package-lock.json ./
COPY bin/vendor-static.sh bin/
RUN bin/vendor-static.sh

# --- build: the virtualenv with the runtime dependencies of pyproject.toml (no dev extras) ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what pip needs: the dependency layer is rebuilt when pyproject.toml changes, not on every edit.
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir .

# --- runtime: the code, the collected static files, a non-root user --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=labmanager.settings_production \
    STATIC_ROOT=/app/staticfiles \
    PORT=8000 \
    WEB_BIND=0.0.0.0:8000 \
    ASGI_BIND=0.0.0.0:8000
RUN groupadd --system --gid 10001 labmanager \
    && useradd --system --uid 10001 --gid labmanager --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin labmanager
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Code stays owned by root (read-only to the service); only var/ is writable by it.
COPY . .
COPY --from=assets /src/static/vendor static/vendor
# collectstatic at build (hashed, compressed; whitenoise serves them). The production profile wants a
# SECRET_KEY and ALLOWED_HOSTS to load: throwaway values for this one command, not kept in the image.
RUN SECRET_KEY=collectstatic-at-build-time-only-not-used-at-run-time-0000000000 \
    ALLOWED_HOSTS=build.invalid DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --noinput -v0 \
    && rm -f /tmp/build.sqlite3 \
    && mkdir -p /app/var/sessions \
    && chown -R labmanager:labmanager /app/var
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "deploy/healthcheck.py", "web"]
# gunicorn (bin/serve web); `bin/serve asgi` for daphne. Behind the proxy (nginx in deploy/docker-compose.yml):
# never publish this port directly. X-Forwarded-For is trusted from TRUSTED_PROXIES only.
CMD ["bin/serve", "web"]
