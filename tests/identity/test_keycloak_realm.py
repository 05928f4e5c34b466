"""deploy/keycloak/labmanager-realm.json agrees with what LabManager expects of its provider (no Keycloak
runs here: the export is checked against the settings' defaults and the role mapping)."""

import json
from pathlib import Path

import pytest
from django.urls import reverse

from apps.api.roles import ROLES
from apps.identity.roles_from_claims import roles_from_claims

REALM = json.loads((Path(__file__).resolve().parents[2] / "deploy/keycloak/labmanager-realm.json").read_text())
CLIENTS = {client["clientId"]: client for client in REALM["clients"]}
USERS = {user["username"]: user for user in REALM["users"]}
GROUP_ROLES = {group["path"]: group.get("realmRoles", []) for group in REALM["groups"]}


def mappers(client_id: str) -> dict[str, dict]:
    return {mapper["protocolMapper"]: mapper["config"] for mapper in CLIENTS[client_id].get("protocolMappers", [])}


def access_token_claims(username: str) -> dict:
    """The role claims Keycloak puts into this user's access token (effective realm roles, groups)."""
    user = USERS[username]
    roles = list(user.get("realmRoles", []))
    for group in user.get("groups", []):
        roles += GROUP_ROLES[group]
    return {"preferred_username": username, "realm_access": {"roles": roles}, "groups": user.get("groups", [])}


def test_the_realm_defines_the_three_roles():
    assert REALM["realm"] == "labmanager" and REALM["enabled"]
    assert {role["name"] for role in REALM["roles"]["realm"]} == set(ROLES)


def test_the_dashboard_is_a_confidential_pkce_client_calling_back_to_labmanager(settings):
    dashboard = CLIENTS[settings.OIDC_RP_CLIENT_ID]

    assert dashboard["publicClient"] is False and dashboard["secret"]
    assert dashboard["standardFlowEnabled"] and not dashboard["implicitFlowEnabled"]
    assert dashboard["attributes"]["pkce.code.challenge.method"] == "S256"
    assert f"http://127.0.0.1:8000{reverse('identity:callback')}" in dashboard["redirectUris"]
    assert "http://127.0.0.1:8000/*" in dashboard["attributes"]["post.logout.redirect.uris"].split("##")


def test_the_cli_uses_the_password_grant_and_automation_the_client_credentials_grant():
    cli, automation = CLIENTS["labmanager-cli"], CLIENTS["labmanager-automation"]

    assert cli["publicClient"] and cli["directAccessGrantsEnabled"] and not cli["standardFlowEnabled"]
    assert not automation["publicClient"] and automation["serviceAccountsEnabled"]
    assert not automation["directAccessGrantsEnabled"] and not automation["standardFlowEnabled"]


@pytest.mark.parametrize("client_id", ["labmanager-dashboard", "labmanager-cli", "labmanager-automation"])
def test_every_client_puts_the_accepted_audience_and_the_role_claims_into_access_tokens(settings, client_id):
    found = mappers(client_id)

    assert found["oidc-audience-mapper"]["included.client.audience"] == settings.OIDC_RP_CLIENT_ID
    assert found["oidc-audience-mapper"]["access.token.claim"] == "true"
    assert found["oidc-usermodel-realm-role-mapper"]["claim.name"] == "realm_access.roles"
    assert found["oidc-group-membership-mapper"]["claim.name"] == "groups"


@pytest.mark.parametrize(("username", "role"), [
    ("demo-admin", "admin"), ("demo-operator", "operator"), ("demo-instructor", "instructor"),
    ("service-account-labmanager-automation", "operator"),
])
def test_each_demo_user_and_the_service_account_map_to_one_role(username, role):
    assert roles_from_claims(access_token_claims(username)) == {role}


def test_demo_passwords_are_temporary():
    people = [user for user in REALM["users"] if "serviceAccountClientId" not in user]

    assert len(people) == 3
    assert all(credential["temporary"] for user in people for credential in user["credentials"])
    assert USERS["service-account-labmanager-automation"]["serviceAccountClientId"] == "labmanager-automation"
