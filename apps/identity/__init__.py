"""Identity: browser login through OpenID Connect (mozilla-django-oidc) and bearer JWTs on the API.

provider.py  settings and the provider's endpoints (discovery)      jwks.py     signing keys, cached
tokens.py    JWT validation (access tokens and ID tokens)           roles_from_claims.py  claims -> roles
services.py  users created/updated from claims, roles synced        oidc.py     the login backend
bearer.py    the DRF authentication class                           views.py / urls.py  /api/auth/...
models.py    ProviderIdentity: an account <-> (issuer, subject)     services_provider.py  provider users' writes
recheck.py, middleware.py  browser sessions re-checked with the provider every OIDC_ROLE_RECHECK_SECONDS
keycloak_admin.py, provider_sync.py, tasks.py  the scheduled sync against Keycloak's admin API
See docs/security-identity.md.
"""
