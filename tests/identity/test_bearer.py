"""`Authorization: Bearer <jwt>` on the API: tokens signed by keys the test holds, validated against the JWKS
the test serves over HTTP (counted), roles from Keycloak-shaped claims."""

import asyncio
import time

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from freezegun import freeze_time
from rest_framework.test import APIClient

from apps.events.access import NotAllowed, user_from_api_key
from apps.events.consumers import EventsConsumer
from apps.identity.services import api_key_create
from tests.identity.conftest import CLIENT_ID, SigningKey

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def bearer(token: str, **extra) -> APIClient:
    client = APIClient(**extra)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def me(token: str):
    return bearer(token).get("/api/auth/me")


def group_names(username: str) -> set[str]:
    return set(get_user_model().objects.get(username=username).groups.values_list("name", flat=True))


# --- accepted -------------------------------------------------------------------------------------------

def test_an_rs256_access_token_authenticates_with_its_realm_role(issuer):
    response = me(issuer.token())

    assert response.status_code == 200, response.content
    assert response.json() == {"username": "olga", "email": "olga@example.test", "roles": ["operator"],
                               "authenticated_by": "bearer_jwt"}
    user = get_user_model().objects.get(username="olga")
    assert (user.first_name, user.last_name, user.is_staff, user.is_superuser) == ("Olga", "Ops", True, False)
    assert not user.has_usable_password()
    assert group_names("olga") == {"operator"}


def test_an_es256_access_token_authenticates(issuer):
    response = me(issuer.token(issuer.ec, preferred_username="eve", realm_access={"roles": ["instructor"]}))

    assert response.status_code == 200, response.content
    assert response.json()["roles"] == ["instructor"]


def test_roles_come_from_client_roles_and_groups_through_the_role_map(issuer, settings):
    settings.OIDC_ROLE_MAP = {"lab-admins": "admin", "teaching": "instructor", "operator": "operator"}
    token = issuer.token(preferred_username="ada", realm_access={"roles": ["offline_access"]},
                         resource_access={CLIENT_ID: {"roles": ["teaching"]}, "other-client": {"roles": ["operator"]}},
                         groups=["/lab-admins", "/unmapped"])

    response = me(token)

    assert response.status_code == 200, response.content
    assert response.json()["roles"] == ["admin", "instructor"]  # other-client's roles are not read
    assert get_user_model().objects.get(username="ada").is_superuser


def test_a_role_protected_endpoint_follows_the_token_roles(issuer):
    operator = issuer.token()
    instructor = issuer.token(preferred_username="ivan", realm_access={"roles": ["instructor"]})

    assert bearer(operator).get("/api/audit/events").status_code == 200  # admin and operator only
    assert bearer(instructor).get("/api/workers").status_code == 200
    refused = bearer(instructor).get("/api/audit/events")
    assert refused.status_code == 403 and refused["Content-Type"] == PROBLEM


def test_a_client_credentials_token_of_a_service_account_maps_to_its_roles(issuer):
    token = issuer.token(preferred_username="service-account-labmanager-automation", azp="labmanager-automation",
                         aud=CLIENT_ID, email=None, given_name=None, family_name=None, scope="profile email",
                         realm_access={"roles": ["operator", "default-roles-labmanager"]})

    response = me(token)

    assert response.status_code == 200, response.content
    assert response.json()["username"] == "service-account-labmanager-automation"
    assert response.json()["roles"] == ["operator"]


def test_a_token_issued_to_the_client_itself_is_accepted_through_azp(issuer):
    assert me(issuer.token(aud="account", azp=CLIENT_ID)).status_code == 200


def test_user_details_and_roles_follow_the_latest_token(issuer):
    assert me(issuer.token(realm_access={"roles": ["operator", "instructor"]})).status_code == 200
    assert group_names("olga") == {"operator", "instructor"}

    response = me(issuer.token(email="olga@new.example", realm_access={"roles": ["instructor"]}))

    assert response.json()["roles"] == ["instructor"]
    assert group_names("olga") == {"instructor"}
    user = get_user_model().objects.get(username="olga")
    assert (user.email, user.is_staff) == ("olga@new.example", False)


def test_api_keys_still_work_next_to_bearer_tokens(issuer, operator_user):
    _, raw = api_key_create(user=operator_user, actor="tests")

    by_bearer = bearer(raw).get("/api/auth/me")
    by_header = APIClient(HTTP_X_API_KEY=raw).get("/api/auth/me")

    assert by_bearer.json()["authenticated_by"] == by_header.json()["authenticated_by"] == "api_key"


# --- refused -------------------------------------------------------------------------------------------

REFUSALS = {
    "expired": lambda i: i.token(exp=int(time.time()) - 120, iat=int(time.time()) - 600, nbf=int(time.time()) - 600),
    "nbf in the future": lambda i: i.token(nbf=int(time.time()) + 600),
    "wrong issuer": lambda i: i.token(iss="https://evil.example/realms/labmanager"),
    "wrong audience": lambda i: i.token(aud="someone-else", azp="someone-else"),
    "alg none": lambda i: i.unsigned_token(),
    "HS256 keyed with the public key": lambda i: i.hs256_with_public_key(),
    "tampered payload": lambda i: _tampered(i.token(realm_access={"roles": ["instructor"]})),
    "signed by a key the issuer never published": lambda i: i.token(SigningKey("RS256"), kid=i.rsa.kid),
    "an ID token": lambda i: i.token(typ="ID"),
    "no expiry": lambda i: i.token(exp=None),
    "not a JWT at all": lambda i: "e30.e30.e30",
}


def _tampered(token: str) -> str:
    """Swap the payload for one granting admin, keep the original signature."""
    import base64
    import json

    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["realm_access"] = {"roles": ["admin"]}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("case", list(REFUSALS))
def test_invalid_tokens_get_401_problem_json(issuer, case):
    response = me(REFUSALS[case](issuer))

    assert response.status_code == 401, (case, response.content)
    assert response["Content-Type"] == PROBLEM
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["status"] == 401
    assert not get_user_model().objects.filter(username="olga").exists()


def test_the_leeway_accepts_a_token_expired_seconds_ago(issuer, settings):
    settings.OIDC_JWT_LEEWAY_SECONDS = 30
    just_expired = issuer.token(exp=int(time.time()) - 5)

    assert me(just_expired).status_code == 200
    settings.OIDC_JWT_LEEWAY_SECONDS = 0
    assert me(just_expired).status_code == 401


def test_a_valid_token_without_a_mapped_role_gets_403_and_loses_earlier_roles(issuer):
    assert me(issuer.token()).status_code == 200

    response = me(issuer.token(realm_access={"roles": ["default-roles-labmanager"]}))

    assert response.status_code == 403 and response["Content-Type"] == PROBLEM
    assert "no LabManager role" in response.json()["detail"]


def test_bearer_jwts_are_refused_when_oidc_is_off(issuer, settings):
    token = issuer.token()
    settings.OIDC_ISSUER = ""

    response = me(token)

    assert response.status_code == 401
    assert "OIDC is not configured" in response.json()["detail"]


def test_an_inactive_user_is_refused(issuer):
    assert me(issuer.token()).status_code == 200
    get_user_model().objects.filter(username="olga").update(is_active=False)

    assert me(issuer.token()).status_code == 401


# --- keys: cache, rotation, rate limit -----------------------------------------------------------------------

def test_no_provider_request_per_api_call(issuer):
    tokens = [issuer.token(), issuer.token(issuer.ec), issuer.token(preferred_username="other")]

    for n in range(30):
        assert me(tokens[n % 3]).status_code == 200

    assert issuer.jwks_requests == 1


def test_a_new_process_reads_the_keys_from_the_django_cache(issuer):
    from apps.identity import jwks

    assert me(issuer.token()).status_code == 200
    jwks.forget()  # what a freshly started process has: nothing in memory, the shared cache intact

    assert me(issuer.token()).status_code == 200
    assert issuer.jwks_requests == 1


def test_an_unknown_kid_refetches_the_rotated_jwks_once(issuer):
    assert me(issuer.token()).status_code == 200
    rotated = SigningKey("RS256")
    issuer.published = [rotated, issuer.rsa]

    first = me(issuer.token(rotated))
    again = me(issuer.token(rotated))

    assert (first.status_code, again.status_code) == (200, 200)
    assert issuer.jwks_requests == 2


def test_refetches_for_unknown_kids_are_rate_limited(issuer, settings):
    settings.OIDC_JWKS_REFETCH_INTERVAL_SECONDS = 1.0
    with freeze_time() as clock:  # the interval is measured on time.monotonic(), which freezegun drives too
        assert me(issuer.token()).status_code == 200
        stranger = SigningKey("RS256")  # never published

        statuses = [me(issuer.token(stranger)).status_code for _ in range(10)]

        assert statuses == [401] * 10
        assert issuer.jwks_requests == 2  # the first load and one refetch
        late = SigningKey("RS256")
        issuer.published = [issuer.rsa, late]
        clock.tick(0.9)
        assert me(issuer.token(late)).status_code == 401  # still within the interval: no refetch
        assert issuer.jwks_requests == 2
        clock.tick(0.2)  # past the interval
        assert me(issuer.token(late)).status_code == 200
        assert issuer.jwks_requests == 3


def test_the_provider_being_down_at_first_use_answers_503(issuer):
    token = issuer.token()
    issuer.stop()

    response = me(token)

    assert response.status_code == 503 and response["Content-Type"] == PROBLEM


# --- the other authenticated surfaces: remote-lab API, SSE and WebSocket ---------------------------------------

def test_the_remote_lab_api_accepts_a_bearer_jwt_from_outside_the_anonymous_networks(issuer):
    foreign = {"REMOTE_ADDR": "203.0.113.7"}

    with_token = bearer(issuer.token()).get("/api/remote-lab/active-session", **foreign)
    without = APIClient().get("/api/remote-lab/active-session", **foreign)

    assert with_token.status_code == 404, with_token.content  # let in: no active session
    assert without.status_code == 401  # no credentials: 401 with WWW-Authenticate, not 403


def test_the_live_streams_accept_a_bearer_jwt_and_refuse_one_without_a_role(issuer):
    assert user_from_api_key(issuer.token()).username == "olga"
    with pytest.raises(NotAllowed):
        user_from_api_key(issuer.token(realm_access={"roles": []}))


@pytest.mark.django_db(transaction=True)
def test_the_websocket_accepts_a_bearer_jwt_as_its_subprotocol_or_first_message(issuer):
    token = issuer.token()

    async def offered(jwt):
        communicator = WebsocketCommunicator(EventsConsumer.as_asgi(), "/ws/events",
                                             subprotocols=["labmanager.v1", f"labmanager.bearer.{jwt}"])
        connected, subprotocol = await communicator.connect(timeout=10)
        await communicator.disconnect()
        return connected, subprotocol

    async def first_message(jwt):
        communicator = WebsocketCommunicator(EventsConsumer.as_asgi(), "/ws/events")
        await communicator.connect(timeout=10)
        await communicator.send_json_to({"type": "auth", "token": jwt})
        answer = await communicator.receive_json_from(timeout=10)
        closed = await communicator.receive_output(timeout=10) if answer["type"] == "error" else None
        await communicator.disconnect()
        return answer["type"], closed and closed.get("code")

    assert asyncio.run(offered(token)) == (True, "labmanager.v1")  # a JWT is a valid subprotocol token
    assert asyncio.run(offered(issuer.token(iss="https://evil.example")))[0] is False
    assert asyncio.run(first_message(token)) == ("authenticated", None)
    assert asyncio.run(first_message(issuer.token(iss="https://evil.example"))) == ("error", 4401)
