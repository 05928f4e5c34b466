"""Validating the provider's JWTs locally: access tokens (bearer) and ID tokens (browser login).

Only RS256 and ES256 (and of those, settings.OIDC_JWT_ALGORITHMS): `none` and HS* are refused before the
signature is looked at, so a token "signed" with the provider's public key as an HMAC secret never
verifies. Checked: signature against the JWKS (apps.identity.jwks), `iss`, `exp` and `nbf` (with
OIDC_JWT_LEEWAY_SECONDS), and the audience: an access token's `aud` or `azp` must be an accepted audience
(OIDC_JWT_AUDIENCES, default the client id); an ID token's `aud` must hold the client id.
"""

import logging

import jwt
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.identity import jwks, provider
from apps.api.models import API_KEY_PREFIX

log = logging.getLogger(__name__)
SUPPORTED_ALGORITHMS = frozenset({"RS256", "ES256"})
# Keycloak's `typ` claim: only access tokens ("Bearer") are accepted on the API.
NOT_ACCESS_TOKENS = frozenset({"id", "refresh", "offline", "logout"})


class InvalidToken(Exception):
    """The token is refused; the message is safe to show to the client."""


class ProviderUnavailable(Exception):
    """The provider's keys could not be fetched and none is cached."""


def looks_like_jwt(raw: str) -> bool:
    """Three dot-separated parts; LabManager API keys (`lm_` + base64url) never contain a dot."""
    return raw.count(".") == 2 and not raw.startswith(API_KEY_PREFIX)


def allowed_algorithms() -> frozenset[str]:
    return frozenset(settings.OIDC_JWT_ALGORITHMS) & SUPPORTED_ALGORITHMS


def _verified_claims(token: str) -> dict:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("The bearer token is not a well-formed JWT.") from None
    alg = header.get("alg")
    if alg not in allowed_algorithms():
        raise InvalidToken(f"Tokens signed with {alg!r} are not accepted; use {', '.join(sorted(allowed_algorithms()))}.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("The token has no key id (kid).")
    try:
        key = jwks.signing_key(kid, alg)
    except jwks.UnusableKey as error:
        raise InvalidToken(str(error)) from None
    except (jwks.KeysUnavailable, ImproperlyConfigured) as error:  # no keys, or discovery failed
        log.error("Bearer tokens cannot be checked: %s", error)
        raise ProviderUnavailable(str(error)) from error
    try:
        return jwt.decode(
            token, key.key, algorithms=[alg], issuer=[provider.issuer(), provider.issuer() + "/"],
            leeway=settings.OIDC_JWT_LEEWAY_SECONDS,
            options={"verify_aud": False, "require": ["exp", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The token has expired.") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("The token is not valid yet (nbf/iat in the future).") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("The token was issued by another issuer.") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("The token's signature does not verify.") from None
    except jwt.PyJWTError as error:
        raise InvalidToken(f"The token is invalid: {error}.") from None


def _audiences(claims: dict) -> set[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return {aud}
    if isinstance(aud, list):
        return {a for a in aud if isinstance(a, str)}
    return set()


def validate_access_token(token: str) -> dict:
    """The claims of a valid access token; raises InvalidToken or ProviderUnavailable."""
    claims = _verified_claims(token)
    if str(claims.get("typ", "")).lower() in NOT_ACCESS_TOKENS:
        raise InvalidToken("This is not an access token.")
    accepted = provider.accepted_audiences()
    if not (_audiences(claims) & accepted or claims.get("azp") in accepted):
        raise InvalidToken("The token is meant for another audience (aud/azp).")
    return claims


def validate_id_token(token: str, *, nonce: str | None) -> dict:
    """The claims of a valid ID token for this client with this nonce."""
    claims = _verified_claims(token)
    client = provider.client_id()
    audiences = _audiences(claims)
    if client not in audiences or (len(audiences) > 1 and claims.get("azp") not in (None, client)):
        raise InvalidToken("The ID token is meant for another client.")
    if settings.OIDC_USE_NONCE and claims.get("nonce") != nonce:
        raise InvalidToken("The ID token's nonce does not match the login.")
    return claims
