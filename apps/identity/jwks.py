"""The provider's signing keys (its JWKS), for validating tokens locally: no provider call per request.

The key set is kept in the process and in the Django cache (Redis with REDIS_URL, so a new process starts
from what another fetched) for OIDC_JWKS_CACHE_SECONDS. A token signed with a key id (`kid`) not in the
set triggers a refetch (key rotation), at most once per OIDC_JWKS_REFETCH_INTERVAL_SECONDS per process:
tokens with made-up kids cannot turn into a flood of requests to the provider.
"""

import logging
import threading
import time
from dataclasses import dataclass, field

import httpx
import jwt
from django.conf import settings
from django.core.cache import cache

from apps.identity import provider

log = logging.getLogger(__name__)

# The JWK key type (and curve) each accepted algorithm needs.
KEY_TYPES = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}


class UnusableKey(Exception):
    """No usable key for the token; the message is safe to show to the client."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched and none is cached."""


@dataclass
class KeySet:
    jwks: dict
    expires: float  # time.monotonic()
    built: dict = field(default_factory=dict)  # (kid, alg) -> PyJWK

    def jwk(self, kid: str) -> dict | None:
        for item in self.jwks.get("keys", ()):
            if isinstance(item, dict) and item.get("kid") == kid and item.get("use", "sig") == "sig":
                return item
        return None


_lock = threading.Lock()
_sets: dict[str, KeySet] = {}  # jwks_uri -> key set
_last_refetch: dict[str, float] = {}  # jwks_uri -> time.monotonic() of the last unknown-kid refetch


def forget() -> None:
    _sets.clear()
    _last_refetch.clear()


def _cache_key(uri: str) -> str:
    return provider._cache_key("jwks", uri)


def _fetch(uri: str) -> dict:
    try:
        response = httpx.get(uri, **provider.http_options())
        response.raise_for_status()
        jwks = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise KeysUnavailable(f"JWKS fetch from {uri} failed: {error}") from error
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise KeysUnavailable(f"{uri} did not answer a JWKS")
    cache.set(_cache_key(uri), jwks, settings.OIDC_JWKS_CACHE_SECONDS)
    log.info("Fetched the provider's JWKS from %s (%d keys)", uri, len(jwks["keys"]))
    return jwks


def _install(uri: str, jwks: dict) -> KeySet:
    keyset = KeySet(jwks=jwks, expires=time.monotonic() + settings.OIDC_JWKS_CACHE_SECONDS)
    _sets[uri] = keyset
    return keyset


def _current(uri: str) -> KeySet:
    keyset = _sets.get(uri)
    if keyset is not None and keyset.expires > time.monotonic():
        return keyset
    with _lock:
        keyset = _sets.get(uri)
        if keyset is not None and keyset.expires > time.monotonic():
            return keyset
        jwks = cache.get(_cache_key(uri))
        if jwks is None:
            try:
                jwks = _fetch(uri)
            except KeysUnavailable:
                if keyset is None:
                    raise
                # Keep the keys we have; try again after the refetch interval.
                log.warning("JWKS refresh from %s failed; keeping the cached keys", uri, exc_info=True)
                keyset.expires = time.monotonic() + settings.OIDC_JWKS_REFETCH_INTERVAL_SECONDS
                return keyset
        return _install(uri, jwks)


def _refresh_for_unknown_kid(uri: str, kid: str, keyset: KeySet) -> KeySet:
    with _lock:
        latest = _sets.get(uri, keyset)
        if latest.jwk(kid) is not None:  # another thread refreshed meanwhile
            return latest
        shared = cache.get(_cache_key(uri))  # another process may have fetched the rotated set
        if shared is not None and shared != latest.jwks and any(k.get("kid") == kid for k in shared.get("keys", ())):
            return _install(uri, shared)
        now = time.monotonic()
        last = _last_refetch.get(uri)
        if last is not None and now - last < settings.OIDC_JWKS_REFETCH_INTERVAL_SECONDS:
            return latest
        _last_refetch[uri] = now
        try:
            return _install(uri, _fetch(uri))
        except KeysUnavailable:
            log.warning("JWKS refetch for unknown kid %r failed", kid, exc_info=True)
            return latest


def signing_key(kid: str, alg: str) -> jwt.PyJWK:
    """The provider's key `kid` for algorithm `alg`; raises UnusableKey or KeysUnavailable."""
    uri = provider.endpoint("OIDC_OP_JWKS_ENDPOINT")
    keyset = _current(uri)
    built = keyset.built.get((kid, alg))
    if built is not None:
        return built
    data = keyset.jwk(kid)
    if data is None:
        keyset = _refresh_for_unknown_kid(uri, kid, keyset)
        data = keyset.jwk(kid)
        if data is None:
            raise UnusableKey("The token is signed with an unknown key.")
    kty, crv = KEY_TYPES[alg]
    if data.get("kty") != kty or (crv and data.get("crv") != crv) or data.get("alg", alg) != alg:
        raise UnusableKey(f"The token's key does not fit algorithm {alg}.")
    try:
        key = jwt.PyJWK(data, algorithm=alg)
    except jwt.PyJWTError as error:
        raise UnusableKey("The provider's key is unusable.") from error
    keyset.built[(kid, alg)] = key
    return key
