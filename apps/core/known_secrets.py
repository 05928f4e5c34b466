"""Secrets whose values are published, in one place: the development realm's client secrets
(deploy/keycloak/labmanager-realm.json), the CML simulator's password (simulators/cml, bin/run.sh, the tests)
and the placeholders of old examples. The production profile (labmanager/settings_production.py) refuses to
start when a secret LabManager reads has one of them (docs/operations.md, "Security: what to set before going
live"). No Django import: the settings import it. tests/deploy/test_known_secrets.py keeps it in step with the
files that publish them."""

PUBLISHED_SECRETS = frozenset({
    # deploy/keycloak/labmanager-realm.json: the development realm's confidential clients
    "labmanager-dashboard-dev-secret",
    "labmanager-automation-dev-secret",
    "labmanager-provider-sync-dev-secret",
    # the CML simulator's default password (simulators/cml/__main__.py, bin/run.sh, tests/conftest.py)
    "sim-password",
    # placeholders .env.example once shipped
    "change-me",
    "changeme",
})

# The settings LabManager reads whose value must not be one of them (DATABASE_URL: its password).
CHECKED_SETTINGS = ("SECRET_KEY", "OIDC_CLIENT_SECRET", "OIDC_ADMIN_CLIENT_SECRET", "CML_PASSWORD", "DATABASE_URL")


def published_settings(values: dict[str, str]) -> list[str]:
    """The names among CHECKED_SETTINGS whose value (for DATABASE_URL, its password) is a published secret."""
    from urllib.parse import unquote, urlsplit

    found = []
    for name in CHECKED_SETTINGS:
        value = values.get(name) or ""
        if name == "DATABASE_URL":
            try:
                value = unquote(urlsplit(value).password or "")
            except ValueError:
                value = ""
        if value.strip() in PUBLISHED_SECRETS:
            found.append(name)
    return found
