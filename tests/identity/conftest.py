"""Real parts for the identity tests, all on 127.0.0.1:

- `oidc_provider`: oidc-provider-mock (a real OpenID provider: authorize form, token endpoint, userinfo,
  JWKS, end-session) served by werkzeug in a thread;
- `issuer`: a Keycloak-shaped issuer the tests control (`/realms/labmanager/...`: discovery and JWKS over
  HTTP) whose RSA and EC keys sign the access tokens of the bearer tests, and which counts JWKS requests;
- the browser flow runs against pytest-django's live server (WSGI in a thread of this process, so the
  `settings` fixture reaches it) bound to 127.0.0.1.
"""

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import oidc_provider_mock
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from werkzeug.serving import make_server

from apps.identity.bearer import forget_synced_users
from apps.identity.provider import forget_provider_caches

# pytest-django's live server binds "localhost" unless told otherwise: keep every server on 127.0.0.1.
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")

CLIENT_ID = "labmanager-dashboard"
REALM_PATH = "/realms/labmanager"


@pytest.fixture(autouse=True)
def _fresh_identity_caches():
    forget_provider_caches()
    forget_synced_users()
    yield
    forget_provider_caches()
    forget_synced_users()


# --- oidc-provider-mock -------------------------------------------------------------------------------

class MockProvider:
    def __init__(self, url: str):
        self.url = url

    def put_user(self, sub: str, claims: dict) -> None:
        """Create or replace the provider's user `sub` (their claims go into the ID token and userinfo)."""
        response = httpx.put(f"{self.url}/users/{sub}", json=claims, timeout=5)
        assert response.status_code == 204, response.text


@pytest.fixture(scope="session")
def oidc_provider():
    server = make_server("127.0.0.1", 0, oidc_provider_mock.app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield MockProvider(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def oidc_settings(settings, oidc_provider):
    """LabManager pointed at the mock provider through discovery (only the issuer is set)."""
    settings.OIDC_ISSUER = oidc_provider.url
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = "dashboard-secret"
    for name in ("OIDC_OP_AUTHORIZATION_ENDPOINT", "OIDC_OP_TOKEN_ENDPOINT", "OIDC_OP_USER_ENDPOINT",
                 "OIDC_OP_JWKS_ENDPOINT", "OIDC_OP_LOGOUT_ENDPOINT"):
        setattr(settings, name, "")
    settings.LOGIN_RATE_LIMIT = settings.API_ANON_RATE_LIMIT = "10000/min"  # not under test here
    return settings


# --- an issuer whose keys the tests hold ------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, alg: str):
        self.alg = alg
        self.kid = f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
        if alg == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            algorithm = jwt.algorithms.RSAAlgorithm
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            algorithm = jwt.algorithms.ECAlgorithm
        self.jwk = {**json.loads(algorithm.to_jwk(self.private.public_key())), "kid": self.kid, "use": "sig", "alg": alg}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


class Issuer:
    """Serves `<url>/realms/labmanager/.well-known/openid-configuration` and `.../certs` (the JWKS)."""

    def __init__(self):
        self.rsa = SigningKey("RS256")
        self.ec = SigningKey("ES256")
        self.published = [self.rsa, self.ec]
        self.jwks_requests = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path == f"{REALM_PATH}/.well-known/openid-configuration":
                    body = issuer.discovery()
                elif self.path == f"{REALM_PATH}/protocol/openid-connect/certs":
                    issuer.jwks_requests += 1
                    body = {"keys": [key.jwk for key in issuer.published]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.url = self.base + REALM_PATH
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def discovery(self) -> dict:
        oidc = f"{self.url}/protocol/openid-connect"
        return {"issuer": self.url, "jwks_uri": f"{oidc}/certs", "authorization_endpoint": f"{oidc}/auth",
                "token_endpoint": f"{oidc}/token", "userinfo_endpoint": f"{oidc}/userinfo",
                "end_session_endpoint": f"{oidc}/logout"}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def claims(self, **overrides) -> dict:
        """A Keycloak-shaped access token's claims (an operator via realm roles), valid for 5 minutes."""
        now = int(time.time())
        claims = {
            "iss": self.url, "sub": str(uuid.uuid4()), "aud": [CLIENT_ID, "account"], "azp": "labmanager-cli",
            "typ": "Bearer", "iat": now, "nbf": now, "exp": now + 300, "scope": "openid profile email",
            "preferred_username": "olga", "email": "olga@example.test", "given_name": "Olga", "family_name": "Ops",
            "realm_access": {"roles": ["default-roles-labmanager", "offline_access", "operator"]},
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, key: SigningKey | None = None, *, kid: str | None = None, **claims) -> str:
        key = key or self.rsa
        return jwt.encode(self.claims(**claims), key.private, algorithm=key.alg, headers={"kid": kid or key.kid})

    def unsigned_token(self, **claims) -> str:
        header = _b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": self.rsa.kid}).encode())
        payload = _b64url(json.dumps(self.claims(**claims)).encode())
        return f"{header}.{payload}."

    def hs256_with_public_key(self, **claims) -> str:
        """The classic confusion attack: an HMAC over the token keyed with the provider's public key."""
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.rsa.kid}).encode())
        payload = _b64url(json.dumps(self.claims(**claims)).encode())
        signature = hmac.new(self.rsa.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64url(signature)}"


@pytest.fixture
def issuer(settings):
    """An issuer with fresh keys; LabManager accepts its tokens (discovery gives the JWKS address)."""
    issuer = Issuer()
    settings.OIDC_ISSUER = issuer.url
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_JWT_AUDIENCES = []
    settings.OIDC_ROLE_CLIENTS = []
    settings.OIDC_OP_JWKS_ENDPOINT = ""
    settings.API_ANON_RATE_LIMIT = "10000/min"  # refused tokens count as anonymous requests: not under test here
    yield issuer
    issuer.stop()
