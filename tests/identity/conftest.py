"""Real parts for the identity tests, all on 127.0.0.1:

- `oidc_provider`: oidc-provider-mock (a real OpenID provider: authorize form, token endpoint, userinfo,
  JWKS, end-session) served by werkzeug in a thread;
- `issuer`: a Keycloak-shaped issuer the tests control (`/realms/labmanager/...`: discovery and JWKS over
  HTTP) whose RSA and EC keys sign the access tokens of the bearer tests, and which counts JWKS requests.
  It also answers the few calls of Keycloak's admin REST API the provider sync makes (a client-credentials
  token, `/admin/realms/labmanager/users/{id}`, its effective realm and client role mappings, its groups,
  `/users?username=&exact=true`, `/clients?clientId=`) from `issuer.users`, which the tests edit. No Keycloak runs here: this is the only
  stand-in for it, written from Keycloak's admin API reference, not a copy of its behaviour;
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
from urllib.parse import parse_qs, urlparse

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
ADMIN_PATH = "/admin/realms/labmanager"
ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET = "labmanager-provider-sync", "provider-sync-test-secret"


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
    """Serves `<url>/realms/labmanager/.well-known/openid-configuration` and `.../certs` (the JWKS), and the
    admin API calls of the provider sync from `users`: {sub: {"username", "enabled", "email", "created" (epoch
    ms), "realm_roles" (effective), "client_roles" {client id: [names]}, "groups" [paths]}}."""

    def __init__(self):
        self.rsa = SigningKey("RS256")
        self.ec = SigningKey("ES256")
        self.published = [self.rsa, self.ec]
        self.jwks_requests = 0
        self.users: dict[str, dict] = {}
        self.admin_requests: list[str] = []
        self.admin_token = f"admin-{uuid.uuid4().hex}"
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                if self.path == f"{REALM_PATH}/.well-known/openid-configuration":
                    body = issuer.discovery()
                elif self.path == f"{REALM_PATH}/protocol/openid-connect/certs":
                    issuer.jwks_requests += 1
                    body = {"keys": [key.jwk for key in issuer.published]}
                elif self.path.startswith(ADMIN_PATH + "/"):
                    if self.headers.get("Authorization") != f"Bearer {issuer.admin_token}":
                        self._answer(401, {"error": "HTTP 401 Unauthorized"})
                        return
                    issuer.admin_requests.append(self.path)
                    status, body = issuer.admin_get(self.path[len(ADMIN_PATH):])
                    self._answer(status, body)
                    return
                else:
                    self.send_error(404)
                    return
                self._answer(200, body)

            def do_POST(self):  # noqa: N802
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                form = {name: values[0] for name, values in form.items()}
                if self.path != f"{REALM_PATH}/protocol/openid-connect/token":
                    self.send_error(404)
                elif (form.get("grant_type"), form.get("client_id"), form.get("client_secret")) != (
                        "client_credentials", ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET):
                    self._answer(401, {"error": "unauthorized_client"})
                else:
                    self._answer(200, {"access_token": issuer.admin_token, "token_type": "Bearer", "expires_in": 300})

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

    def admin_get(self, path: str) -> tuple[int, object]:
        """Keycloak's admin API, the part the provider sync reads (paths under /admin/realms/labmanager)."""
        url = urlparse(path)
        parts = url.path.strip("/").split("/")
        if parts == ["clients"]:
            client_id = parse_qs(url.query).get("clientId", [""])[0]
            return 200, [{"id": f"uuid-of-{client_id}", "clientId": client_id}]
        if parts == ["users"]:  # the search; `exact=true`: the username exactly (Keycloak's are lower case)
            query = parse_qs(url.query)
            name = query.get("username", [""])[0].lower()
            exact = query.get("exact", [""])[0] == "true"
            return 200, [self.representation(sub) for sub, user in self.users.items()
                         if (user["username"] == name if exact else name in user["username"])]
        if len(parts) < 2 or parts[0] != "users" or parts[1] not in self.users:
            return 404, {"error": "User not found"}
        user = self.users[parts[1]]
        rest = parts[2:]
        if not rest:
            return 200, self.representation(parts[1])
        if rest == ["role-mappings", "realm", "composite"]:
            return 200, [{"name": name, "composite": False} for name in user.get("realm_roles", [])]
        if len(rest) == 4 and rest[:2] == ["role-mappings", "clients"] and rest[3] == "composite":
            client = rest[2].removeprefix("uuid-of-")
            return 200, [{"name": name} for name in user.get("client_roles", {}).get(client, [])]
        if rest == ["groups"]:
            return 200, [{"name": group.rsplit("/", 1)[-1], "path": group} for group in user.get("groups", [])]
        return 404, {"error": "Not found"}

    def representation(self, sub: str) -> dict:
        """Keycloak's UserRepresentation of `users[sub]`; `created` (epoch ms) defaults to 2020-09-13."""
        user = self.users[sub]
        return {"id": sub, "username": user["username"], "enabled": user.get("enabled", True),
                "createdTimestamp": user.get("created", 1_600_000_000_000), "email": user.get("email"),
                "firstName": user.get("first_name"), "lastName": user.get("last_name")}

    def subject(self, username: str) -> str:
        """The `sub` of this issuer's tokens for `username` (claims(), when not given)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.url}/users/{username}"))

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def claims(self, **overrides) -> dict:
        """A Keycloak-shaped access token's claims (an operator via realm roles), valid for 5 minutes. The
        subject is the same for every token of one `preferred_username` (one Keycloak user), unless given."""
        now = int(time.time())
        claims = {
            "iss": self.url, "sub": self.subject(overrides.get("preferred_username") or "olga"), "aud": [CLIENT_ID, "account"], "azp": "labmanager-cli",
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
