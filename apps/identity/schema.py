"""The browser sign-in endpoints in the OpenAPI document. They are plain Django views (apps/identity/views.py),
which drf-spectacular does not see: this postprocessing hook (SPECTACULAR_SETTINGS) describes them with the
statuses they really answer. apps.api.schema.complete_operations adds X-Trace-Id afterwards."""

from apps.api.schema import RETRY_AFTER, header, problem_response_schema, rate_limit_headers

LOCATION = header("Where the browser goes next.", {"type": "string"}, required=True)


def _redirect(description: str, **headers) -> dict:
    return {"description": description, "headers": {"Location": LOCATION, **headers}}


def _login() -> dict:
    counted = rate_limit_headers(required=True)  # LOGIN_RATE_LIMIT per address counts every start
    return {
        "operationId": "auth_login",
        "summary": "Start the browser sign-in",
        "description": "Starts the OpenID Connect authorization-code flow (PKCE S256, state, nonce) and redirects "
                       "to the provider; with OIDC off (no OIDC_ISSUER), to the local login page /accounts/login/. "
                       "LOGIN_RATE_LIMIT per client address. For browsers: API clients use API keys or bearer "
                       "tokens. docs/security-identity.md.",
        "tags": ["auth"],
        "security": [],
        "parameters": [{"name": "next", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "Where to go after signing in (a path on this site)."}],
        "responses": {
            "302": _redirect("To the provider's authorization endpoint (or the local login page).", **counted),
            "429": {**problem_response_schema("Too many sign-in attempts from this address."),
                    "headers": {**counted, "Retry-After": RETRY_AFTER}},
            "503": {**problem_response_schema("The identity provider cannot be reached."),
                    "headers": {**counted, "Retry-After": RETRY_AFTER}},
        },
    }


def _callback() -> dict:
    return {
        "operationId": "auth_callback",
        "summary": "The provider's redirect back",
        "description": "Signs the user in (a session cookie) and redirects to `next`; a user without a LabManager "
                       "role goes to /accounts/no-access/, a failed or cancelled sign-in (or a `state` this browser "
                       "never started) to /accounts/login/?sso_failed=1. Not for API clients.",
        "tags": ["auth"],
        "security": [],
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": text}
            for name, text in (("code", "The authorization code."), ("state", "The flow's state."),
                               ("error", "The provider's refusal (e.g. access_denied)."))
        ],
        "responses": {"302": _redirect("Signed in (to `next`), no role, or sign-in failed.")},
    }


def _logout() -> dict:
    return {
        "post": {
            "operationId": "auth_logout",
            "summary": "Sign out",
            "description": "Ends the Django session, then redirects to the provider's end-session endpoint "
                           "(RP-initiated logout) for a provider session, else to LOGOUT_REDIRECT_URL. A browser "
                           "form's POST with the CSRF token (Django's CSRF check): without it, 403.",
            "tags": ["auth"],
            "security": [],
            "responses": {
                "302": _redirect("Signed out: to the provider's end-session endpoint or LOGOUT_REDIRECT_URL."),
                "403": problem_response_schema("No CSRF token, or a wrong one."),
            },
        },
        "get": {
            "operationId": "auth_logout_get",
            "summary": "Sign out (refused: POST only)",
            "description": "A GET ends nothing, so that a link or an image on another page cannot sign anyone out.",
            "tags": ["auth"],
            "security": [],
            "responses": {"405": {**problem_response_schema("POST only."), "headers": {
                "Allow": header("The methods this path takes.", {"type": "string"}, required=True)}}},
        },
    }


def add_sign_in_endpoints(result, generator, request, public):
    paths = result.setdefault("paths", {})
    paths["/api/auth/login"] = {"get": _login()}
    paths["/api/auth/callback"] = {"get": _callback()}
    paths["/api/auth/logout"] = _logout()
    return result
