"""The production profile (labmanager.settings_production) passes Django's deployment checks."""

import json

from apps.core.csp import build_policy
from tests.deploy.conftest import manage, production_env


def _directives(policy: str) -> dict:
    return {part.split()[0]: part.split()[1:] for part in policy.split("; ")}


def test_check_deploy_reports_nothing_with_the_production_profile():
    done = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert done.returncode == 0, done.stderr
    # Silenced: only the reminders that HSTS includeSubDomains (W005) and preload (W021) are off.
    assert done.stdout.strip() == "System check identified no issues (2 silenced)."
    assert done.stderr == ""


def test_check_deploy_silences_nothing_once_hsts_covers_subdomains_and_preload():
    env = production_env(SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true")
    done = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "System check identified no issues (0 silenced)."


def _hsts_header(**extra: str) -> str:
    """The Strict-Transport-Security header the production profile sends on an HTTPS request."""
    code = ("from django.test import Client; "
            "print(Client().get('/api/diagnostics/health', secure=True, HTTP_HOST='127.0.0.1')"
            "['Strict-Transport-Security'])")
    done = manage("shell", "--no-imports", "-c", code, env=production_env(**extra))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_hsts_covers_only_this_host_by_default():
    assert _hsts_header() == "max-age=31536000"  # no includeSubDomains, no preload


def test_hsts_subdomains_and_preload_are_turned_on_by_their_settings():
    assert _hsts_header(SECURE_HSTS_INCLUDE_SUBDOMAINS="true") == "max-age=31536000; includeSubDomains"
    assert (_hsts_header(SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true")
            == "max-age=31536000; includeSubDomains; preload")


def test_the_development_settings_fail_the_same_check():
    # The check above can fail: without the profile, DEBUG and insecure cookies are reported.
    env = production_env(DJANGO_SETTINGS_MODULE="labmanager.settings")
    done = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert done.returncode != 0
    assert "security.W018" in done.stderr  # DEBUG on
    assert "security.W004" in done.stderr  # no HSTS


def test_check_deploy_warns_when_the_audit_chain_key_is_derived_from_the_secret_key():
    done = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(AUDIT_CHAIN_KEY=""))

    assert done.returncode != 0
    assert "audit.W001" in done.stderr and "AUDIT_CHAIN_KEY is not set" in done.stderr


def test_check_deploy_warns_when_oidc_is_on_without_the_provider_syncs_admin_client():
    oidc = {"OIDC_ISSUER": "https://sso.example.test/realms/labmanager", "OIDC_CLIENT_SECRET": "x"}
    without = manage("check", "--deploy", "--fail-level", "WARNING",
                     env=production_env(**oidc, OIDC_ADMIN_CLIENT_ID="labmanager-provider-sync", OIDC_ADMIN_CLIENT_SECRET=""))
    with_it = manage("check", "--deploy", "--fail-level", "WARNING",
                     env=production_env(**oidc, OIDC_ADMIN_CLIENT_ID="labmanager-provider-sync",
                                        OIDC_ADMIN_CLIENT_SECRET="provider-sync-secret"))

    assert without.returncode != 0
    assert "identity.W001" in without.stderr and "the provider sync is off" in without.stderr
    assert with_it.returncode == 0, with_it.stderr


def test_the_production_profile_refuses_to_start_without_a_secret_key():
    env = production_env()
    del env["SECRET_KEY"]
    done = manage("check", env=env)

    assert done.returncode != 0
    assert "SECRET_KEY must be set in production" in done.stderr


def test_the_production_profile_refuses_to_start_without_allowed_hosts():
    done = manage("check", env=production_env(ALLOWED_HOSTS=""))

    assert done.returncode != 0
    assert "ALLOWED_HOSTS must be set in production" in done.stderr


def test_the_policy_allows_scripts_and_event_streams_only_from_this_site():
    directives = _directives(build_policy())

    assert directives["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["connect-src"] == ["'self'"]  # EventSource, fetch
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]


def test_the_policy_lets_the_logout_form_reach_the_oidc_provider_only():
    directives = _directives(build_policy(form_action_extra=["https://sso.example.org"]))

    assert directives["form-action"] == ["'self'", "https://sso.example.org"]
    assert directives["script-src"] == ["'self'"]


def test_the_production_profile_answers_an_allowed_origins_preflight_behind_its_security_headers():
    """CORS_ALLOWED_ORIGINS is read the same in production; the preflight's answer still carries HSTS, the CSP
    and the trace id (CorsMiddleware sits inside the security edge), and no credentials are allowed."""
    code = ("from django.test import Client; "
            "r = Client().options('/api/lablet-instances', secure=True, HTTP_HOST='127.0.0.1', "
            "HTTP_ORIGIN='https://lms.example.org', HTTP_ACCESS_CONTROL_REQUEST_METHOD='POST', "
            "HTTP_ACCESS_CONTROL_REQUEST_HEADERS='authorization, content-type, idempotency-key'); "
            "import json; print(json.dumps([r.status_code, {k.lower(): v for k, v in r.headers.items()}]))")
    done = manage("shell", "--no-imports", "-c", code,
                  env=production_env(CORS_ALLOWED_ORIGINS="https://lms.example.org,https://moodle.example.org"))

    assert done.returncode == 0, done.stderr
    status, headers = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://lms.example.org"
    assert "idempotency-key" in headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in headers
    assert headers["strict-transport-security"].startswith("max-age=")
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["x-trace-id"]
