"""The OpenID provider's settings and endpoints.

OIDC is on when settings.OIDC_ISSUER is set. Endpoints are the explicit OIDC_OP_* settings, else the
issuer's discovery document (`<issuer>/.well-known/openid-configuration`), fetched once and kept in the
process and in the Django cache for OIDC_DISCOVERY_CACHE_SECONDS. Settings are read per call, so tests
and reconfiguration need no restart.
"""

import hashlib
import threading
import time

import httpx
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from mozilla_django_oidc.utils import import_from_settings

# mozilla-django-oidc's setting name -> the discovery document's field.
ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
    "OIDC_OP_LOGOUT_ENDPOINT": "end_session_endpoint",
}
_MISSING = object()
_lock = threading.Lock()
_documents: dict[str, tuple[float, dict]] = {}  # issuer -> (monotonic expiry, document)


def oidc_enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def issuer() -> str:
    return settings.OIDC_ISSUER.rstrip("/")


def client_id() -> str:
    return settings.OIDC_RP_CLIENT_ID


def accepted_audiences() -> frozenset[str]:
    return frozenset(settings.OIDC_JWT_AUDIENCES or [client_id()])


def role_clients() -> tuple[str, ...]:
    return tuple(settings.OIDC_ROLE_CLIENTS or [client_id()])


def http_options() -> dict:
    return {"timeout": settings.OIDC_TIMEOUT, "verify": settings.OIDC_VERIFY_SSL}


def _cache_key(kind: str, url: str) -> str:
    return f"identity:{kind}:{hashlib.sha256(url.encode()).hexdigest()[:24]}"


def discovery_document() -> dict:
    """The issuer's discovery document (process cache, then the Django cache, then the provider)."""
    if not oidc_enabled():
        raise ImproperlyConfigured("OIDC is not configured: set OIDC_ISSUER.")
    name = issuer()
    now = time.monotonic()
    entry = _documents.get(name)
    if entry and entry[0] > now:
        return entry[1]
    with _lock:
        entry = _documents.get(name)
        if entry and entry[0] > now:
            return entry[1]
        ttl = settings.OIDC_DISCOVERY_CACHE_SECONDS
        key = _cache_key("discovery", name)
        document = cache.get(key)
        if document is None:
            url = name + "/.well-known/openid-configuration"
            try:
                response = httpx.get(url, **http_options())
                response.raise_for_status()
                document = response.json()
            except (httpx.HTTPError, ValueError) as error:
                raise ImproperlyConfigured(f"OIDC discovery failed at {url}: {error}") from error
            if str(document.get("issuer", "")).rstrip("/") != name:
                raise ImproperlyConfigured(f"The discovery document of {name} names issuer {document.get('issuer')!r}.")
            cache.set(key, document, ttl)
        _documents[name] = (now + ttl, document)
        return document


def endpoint(setting_name: str, default=_MISSING):
    """An endpoint: the explicit setting, else the discovery document's field."""
    explicit = getattr(settings, setting_name)  # one of ENDPOINTS, all declared
    if explicit:
        return explicit
    value = discovery_document().get(ENDPOINTS[setting_name])
    if value:
        return value
    if default is not _MISSING:
        return default
    raise ImproperlyConfigured(f"The provider announces no {ENDPOINTS[setting_name]}; set {setting_name}.")


def provider_setting(name: str, *default):
    """mozilla-django-oidc's `get_settings`, with endpoints resolved through discovery."""
    if name in ENDPOINTS:
        return endpoint(name, *default)
    return import_from_settings(name, *default)


def forget_provider_caches() -> None:
    """Drop the process caches (tests, and after a configuration change)."""
    from apps.identity import jwks

    _documents.clear()
    jwks.forget()
