"""The production profile: labmanager.settings plus hardening. Select it with
DJANGO_SETTINGS_MODULE=labmanager.settings_production (the container image sets it).

Everything of labmanager.settings still comes from the environment; this module only turns DEBUG off,
refuses to start without a real SECRET_KEY and ALLOWED_HOSTS or with a published secret (a development client
secret, the simulator's CML password, `change-me`: apps/core/known_secrets.py), makes cookies Secure, sends HSTS and a
Content-Security-Policy, trusts X-Forwarded-Proto from the TLS-terminating proxy, serves hashed static
files, and logs JSON lines. `python manage.py check --deploy` reports nothing with it (HSTS includeSubDomains and preload
are off by default, and their two reminders silenced)
(tests/deploy/test_production_settings.py). Every variable: docs/operations.md#environment.
"""

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from apps.core.csp import build_policy
from apps.core.known_secrets import published_settings
from labmanager.settings import *  # noqa: F403
from labmanager.settings import LOG_LEVEL, OIDC_ISSUER, SECRET_KEY, env

DEBUG = False

if not os.environ.get("SECRET_KEY") or SECRET_KEY.startswith("dev-insecure"):
    raise ImproperlyConfigured("SECRET_KEY must be set in production (50+ random characters; docs/operations.md).")
if not os.environ.get("ALLOWED_HOSTS"):
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production: the host names the site answers to.")
_published = published_settings(os.environ)
if _published:  # the value is never repeated in the message: a log is no place for a secret, even a known one
    raise ImproperlyConfigured(
        f"{', '.join(_published)} holds a published value (a development secret or a placeholder, "
        "apps/core/known_secrets.py): generate a secret of your own, e.g. "
        "python -c \"import secrets; print(secrets.token_urlsafe(32))\" (docs/operations.md, before going live).")

# --- HTTPS ---------------------------------------------------------------------------------
# TLS ends at the proxy or load balancer in front of daphne, which must set X-Forwarded-Proto (and strip
# any the client sent). Leave SECURE_PROXY_SSL_HEADER on only then: otherwise clients could claim HTTPS.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("SECURE_PROXY_SSL_HEADER", default=True) else None
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Probes and scrapes come over plain HTTP from inside the network (container health check, Prometheus).
SECURE_REDIRECT_EXEMPT = [r"^api/diagnostics/(health|ready)$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)  # sent on HTTPS responses only
# includeSubDomains and preload reach beyond this site: every subdomain of the host must then speak HTTPS
# (preload: for good, once the domain is on the browsers' list). Off unless the operator turns them on;
# while off, Django's deployment check's reminders of them (W005, W021) are silenced, nothing else.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [
    *([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"]),
    *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True

# --- Content-Security-Policy (apps/core/csp.py) ----------------------------------------------
# Scripts, styles, EventSource/fetch and WebSocket only from this origin; no inline scripts. A logout form
# redirects to the OIDC provider, so its origin is allowed as a form target. The variable (declared in
# labmanager.settings, empty there) replaces this default; set empty, no header is sent.
_issuer = urlsplit(OIDC_ISSUER) if OIDC_ISSUER else None
CONTENT_SECURITY_POLICY = env.str(
    "CONTENT_SECURITY_POLICY",
    default=build_policy(form_action_extra=[f"{_issuer.scheme}://{_issuer.netloc}"] if _issuer else []),
)

# --- static files: collected at image build, hashed names, compressed, served by whitenoise ----
WHITENOISE_USE_FINDERS = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- logging: one JSON object per line on stderr, with the request's trace_id ------------------
LOG_FORMAT = env.str("LOG_FORMAT", default="json")  # json | plain
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"trace_id": {"()": "apps.core.middleware.TraceIdLogFilter"}},
    "formatters": {
        "json": {"()": "apps.core.jsonlog.JsonLinesFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["trace_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django.security": {"level": "WARNING"},  # DisallowedHost, CSRF failures
        "daphne": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
