"""The browser flow end to end against a live server and a real OpenID provider (oidc-provider-mock):
login redirect (PKCE, state, nonce), the provider's login form, the callback, the session cookie, an API
call with it, roles synced from Keycloak-shaped claims at every login, the 403 page, and logout with
RP-initiated logout at the provider. The "browser" is an httpx client that keeps cookies."""

from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from django.contrib.auth import get_user_model

from tests.identity.conftest import CLIENT_ID

pytestmark = pytest.mark.django_db(transaction=True)

OPERATOR_CLAIMS = {
    "preferred_username": "olga", "email": "olga@example.test", "given_name": "Olga", "family_name": "Ops",
    "realm_access": {"roles": ["default-roles-labmanager", "operator"]},
}


@pytest.fixture
def browser():
    with httpx.Client(timeout=10, follow_redirects=True) as client:
        yield client


def start_login(browser, live_server, next_url=None) -> httpx.Response:
    """GET /api/auth/login without following: the redirect to the provider's authorize endpoint."""
    params = {"next": next_url} if next_url else None
    return browser.get(f"{live_server.url}/api/auth/login", params=params, follow_redirects=False)


def log_in(browser, live_server, sub: str, next_url=None) -> httpx.Response:
    """The whole flow: LabManager -> provider's form -> POST the subject -> callback -> landing page."""
    form = browser.get(start_login(browser, live_server, next_url).headers["Location"])
    assert form.status_code == 200 and 'name="sub"' in form.text
    return browser.post(str(form.url), data={"sub": sub})


def session_cookie_header(response: httpx.Response) -> str | None:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith("sessionid="):
            return value
    return None


def group_names(username: str) -> set[str]:
    return set(get_user_model().objects.get(username=username).groups.values_list("name", flat=True))


def test_login_redirects_to_the_provider_with_pkce_state_and_nonce(oidc_settings, oidc_provider, live_server, browser):
    response = start_login(browser, live_server)

    assert response.status_code == 302
    location = urlparse(response.headers["Location"])
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert f"{location.scheme}://{location.netloc}" == oidc_provider.url
    assert location.path == "/oauth2/authorize"
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == f"{live_server.url}/api/auth/callback"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    assert set(query["scope"].split()) >= {"openid", "email", "profile"}


def test_a_user_logs_in_through_the_provider_and_calls_the_api_with_the_session(
        oidc_settings, oidc_provider, live_server, browser):
    oidc_provider.put_user("olga-sub", OPERATOR_CLAIMS)

    landing = log_in(browser, live_server, "olga-sub", next_url="/api/auth/me")

    assert landing.status_code == 200, landing.text
    assert str(landing.url) == f"{live_server.url}/api/auth/me"
    assert landing.json() == {"username": "olga", "email": "olga@example.test", "roles": ["operator"],
                              "authenticated_by": "session"}
    cookie = session_cookie_header(landing.history[-1])  # set by the callback
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in flags and "samesite=lax" in flags
    assert "secure" not in flags  # DEBUG in this run; see the Secure test below
    user = get_user_model().objects.get(username="olga")
    assert (user.email, user.first_name, user.last_name) == ("olga@example.test", "Olga", "Ops")
    assert not user.has_usable_password()
    assert group_names("olga") == {"operator"}
    assert browser.get(f"{live_server.url}/api/audit/events").status_code == 200  # operator-only endpoint


def test_the_session_cookie_is_secure_outside_debug(oidc_settings, live_server, browser):
    oidc_settings.SESSION_COOKIE_SECURE = True  # what settings.py sets when DEBUG is off

    cookie = SimpleCookie(session_cookie_header(start_login(browser, live_server)))["sessionid"]

    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax"


def test_roles_come_from_realm_roles_client_roles_and_groups(oidc_settings, oidc_provider, live_server, browser):
    oidc_settings.OIDC_ROLE_MAP = {"admin": "admin", "lab-operators": "operator", "teacher": "instructor"}
    oidc_provider.put_user("ada-sub", {
        "preferred_username": "ada", "email": "ada@example.test",
        "realm_access": {"roles": ["offline_access"]},
        "resource_access": {CLIENT_ID: {"roles": ["teacher"]}, "account": {"roles": ["admin"]}},
        "groups": ["/lab-operators"],
    })

    me = log_in(browser, live_server, "ada-sub", next_url="/api/auth/me")

    assert me.json()["roles"] == ["instructor", "operator"]  # the `account` client's roles are not read
    assert group_names("ada") == {"instructor", "operator"}


def test_roles_removed_at_the_provider_are_removed_at_the_next_login(oidc_settings, oidc_provider, live_server):
    oidc_provider.put_user("olga-sub", {**OPERATOR_CLAIMS, "realm_access": {"roles": ["operator", "admin"]}})
    with httpx.Client(timeout=10, follow_redirects=True) as first:
        log_in(first, live_server, "olga-sub")
    assert group_names("olga") == {"admin", "operator"}
    assert get_user_model().objects.get(username="olga").is_superuser

    oidc_provider.put_user("olga-sub", {**OPERATOR_CLAIMS, "realm_access": {"roles": ["instructor"]},
                                        "email": "olga@new.example"})
    with httpx.Client(timeout=10, follow_redirects=True) as second:
        me = log_in(second, live_server, "olga-sub", next_url="/api/auth/me")

    assert me.json()["roles"] == ["instructor"]
    user = get_user_model().objects.get(username="olga")
    assert group_names("olga") == {"instructor"}
    assert (user.is_superuser, user.is_staff, user.email) == (False, False, "olga@new.example")


def test_a_user_without_a_mapped_role_gets_the_403_page_and_no_session(oidc_settings, oidc_provider, live_server, browser):
    oidc_provider.put_user("nora-sub", {"preferred_username": "nora", "email": "nora@example.test",
                                        "realm_access": {"roles": ["default-roles-labmanager", "offline_access"]},
                                        "groups": ["/students"]})

    page = log_in(browser, live_server, "nora-sub", next_url="/api/auth/me")

    assert page.status_code == 403
    assert str(page.url) == f"{live_server.url}/accounts/no-access/"
    assert "text/html" in page.headers["Content-Type"] and "no LabManager role" in page.text
    assert group_names("nora") == set()
    assert browser.get(f"{live_server.url}/api/auth/me").status_code == 401


def test_a_user_who_lost_every_role_is_refused_at_the_next_login(oidc_settings, oidc_provider, live_server):
    oidc_provider.put_user("olga-sub", OPERATOR_CLAIMS)
    with httpx.Client(timeout=10, follow_redirects=True) as first:
        log_in(first, live_server, "olga-sub")
    oidc_provider.put_user("olga-sub", {**OPERATOR_CLAIMS, "realm_access": {"roles": []}})

    with httpx.Client(timeout=10, follow_redirects=True) as second:
        page = log_in(second, live_server, "olga-sub")

    assert page.status_code == 403
    assert group_names("olga") == set()


def test_logout_ends_the_session_and_redirects_to_the_providers_end_session(
        oidc_settings, oidc_provider, live_server, browser):
    oidc_provider.put_user("olga-sub", OPERATOR_CLAIMS)
    log_in(browser, live_server, "olga-sub")
    assert browser.get(f"{live_server.url}/api/auth/me").status_code == 200
    old_session = browser.cookies["sessionid"]
    page = browser.get(f"{live_server.url}/")  # the dashboard's "Log out" form carries the token
    token = page.text.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]

    response = browser.post(f"{live_server.url}/api/auth/logout", data={"csrfmiddlewaretoken": token},
                            headers={"Referer": f"{live_server.url}/"}, follow_redirects=False)

    assert response.status_code == 302
    location = urlparse(response.headers["Location"])
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{oidc_provider.url}/oauth2/end_session"
    assert query["id_token_hint"].count(".") == 2
    assert query["post_logout_redirect_uri"] == f"{live_server.url}/"
    assert query["client_id"] == CLIENT_ID
    assert browser.get(f"{live_server.url}/api/auth/me").status_code == 401
    replayed = httpx.get(f"{live_server.url}/api/auth/me", cookies={"sessionid": old_session}, timeout=10)
    assert replayed.status_code == 401  # the session is gone on the server, not only from the browser
    # The provider's end-session form, confirmed, sends the browser back to LabManager.
    confirm = browser.post(f"{oidc_provider.url}/oauth2/end_session/confirm",
                           data={"redirect_uri": query["post_logout_redirect_uri"]})
    assert str(confirm.url) == f"{live_server.url}/" and confirm.status_code == 200


def test_logout_by_post_needs_the_csrf_token(oidc_settings, oidc_provider, live_server, browser):
    oidc_provider.put_user("olga-sub", OPERATOR_CLAIMS)
    log_in(browser, live_server, "olga-sub")
    page = browser.get(f"{live_server.url}/")  # the dashboard's "Log out" form carries the token
    token = page.text.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]

    forged = browser.post(f"{live_server.url}/api/auth/logout", follow_redirects=False)
    real = browser.post(f"{live_server.url}/api/auth/logout", data={"csrfmiddlewaretoken": token},
                        headers={"Referer": f"{live_server.url}/"}, follow_redirects=False)

    assert forged.status_code == 403
    assert real.status_code == 302 and real.headers["Location"].startswith(f"{oidc_provider.url}/oauth2/end_session")
    assert browser.get(f"{live_server.url}/api/auth/me").status_code == 401


def test_a_callback_with_a_state_this_browser_never_sent_fails_cleanly(oidc_settings, live_server, browser):
    start_login(browser, live_server)

    response = browser.get(f"{live_server.url}/api/auth/callback", params={"code": "x", "state": "forged"})

    assert response.status_code == 200
    assert str(response.url) == f"{live_server.url}/accounts/login/?sso_failed=1"
    assert "Single sign-on did not complete" in response.text


def test_the_local_login_page_sends_users_to_single_sign_on(oidc_settings, live_server, browser):
    response = browser.get(f"{live_server.url}/accounts/login/", params={"next": "/api/docs"}, follow_redirects=False)
    local = browser.get(f"{live_server.url}/accounts/login/", params={"local": "1"})

    assert response.status_code == 302 and response.headers["Location"] == "/api/auth/login?next=%2Fapi%2Fdocs"
    assert local.status_code == 200 and 'name="password"' in local.text and "/api/auth/login" in local.text


def test_without_oidc_the_local_login_stays_and_api_login_redirects_there(settings, live_server, browser):
    settings.OIDC_ISSUER = ""

    page = browser.get(f"{live_server.url}/accounts/login/")
    start = browser.get(f"{live_server.url}/api/auth/login", params={"next": "/api/docs"}, follow_redirects=False)

    assert page.status_code == 200 and 'name="password"' in page.text and "single sign-on" not in page.text
    assert start.status_code == 302 and start.headers["Location"] == "/accounts/login/?next=%2Fapi%2Fdocs"


def test_starting_logins_is_rate_limited_per_address(oidc_settings, live_server, browser):
    oidc_settings.LOGIN_RATE_LIMIT = "2/min"

    statuses = [start_login(browser, live_server).status_code for _ in range(3)]
    refused = start_login(browser, live_server)

    assert statuses[:2] == [302, 302] and statuses[2] == 429
    assert refused.headers["Content-Type"] == "application/problem+json" and int(refused.headers["Retry-After"]) >= 1
