"""Logout is POST only, with the CSRF token: a GET (a link, an <img> on any page) ends no session.
Every logout the site offers: /api/auth/logout (OIDC, the dashboard's button), Django's
/accounts/logout/ and the admin's /admin/logout/. Django's test client, through the whole middleware."""

import re
from pathlib import Path

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
LOGOUTS = ["/api/auth/logout", "/accounts/logout/", "/admin/logout/"]


def signed_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def still_signed_in(client) -> bool:
    return client.get("/api/auth/me").status_code == 200


@pytest.mark.parametrize("path", LOGOUTS)
@pytest.mark.parametrize("method", ["get", "head"])
def test_a_get_to_a_logout_ends_no_session(admin_user, path, method):
    client = signed_in(admin_user)

    response = getattr(client, method)(path)

    assert response.status_code == 405
    assert response["Allow"] and "GET" not in response["Allow"]
    assert still_signed_in(client)


@pytest.mark.parametrize("path", LOGOUTS)
def test_a_logout_post_without_the_csrf_token_is_refused(admin_user, path):
    client = signed_in(admin_user, enforce_csrf_checks=True)

    response = client.post(path)

    assert response.status_code == 403
    assert still_signed_in(client)


@pytest.mark.parametrize("path", LOGOUTS)
def test_a_logout_post_with_the_csrf_token_ends_the_session(admin_user, path):
    client = signed_in(admin_user, enforce_csrf_checks=True)
    page = client.get("/dashboard/")  # the header's "Log out" form carries the token
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)

    response = client.post(path, {"csrfmiddlewaretoken": token})

    assert response.status_code in (200, 302)  # the admin answers its "logged out" page
    assert not still_signed_in(client)


def test_the_no_access_page_logs_out_with_a_form_that_posts_the_token():
    page = Client().get("/accounts/no-access/").content.decode()

    form = re.search(r'<form method="post" action="/api/auth/logout">(.*?)</form>', page, re.S)
    assert form and 'name="csrfmiddlewaretoken"' in form.group(1)


def test_no_template_links_to_a_logout():
    """A logout reached by a link is a GET: every template offers it as a POST form with the token."""
    offenders = []
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        for match in re.finditer(r"<(a|img|link|script|iframe)\b[^>]*logout[^>]*>", text, re.I):
            offenders.append(f"{template.relative_to(TEMPLATES)}: {match.group(0)}")
        for match in re.finditer(r"<form\b[^>]*logout[^>]*>", text, re.I):
            if 'method="post"' not in match.group(0).lower():
                offenders.append(f"{template.relative_to(TEMPLATES)}: {match.group(0)}")
            elif "{% csrf_token %}" not in text[match.end():text.find("</form>", match.end())]:
                offenders.append(f"{template.relative_to(TEMPLATES)}: no csrf_token in {match.group(0)}")
    assert offenders == []


def test_an_error_at_the_oidc_callback_ends_no_session(admin_user, oidc_settings):
    """mozilla-django-oidc logs the browser out when the provider's callback carries `error`: a GET anyone can
    link to. Ours only fails the sign-in, and spends the state."""
    client = signed_in(admin_user)
    session = client.session
    session["oidc_states"] = {"pending-state": {"code_verifier": None, "nonce": "n", "added_on": 0}}
    session.save()

    response = client.get("/api/auth/callback", {"error": "access_denied", "state": "pending-state"})

    assert response.status_code == 302 and "sso_failed" in response["Location"]
    assert still_signed_in(client)
    assert "pending-state" not in client.session.get("oidc_states", {})
