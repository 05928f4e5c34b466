"""Checks of the audit chain's keys: not SECRET_KEY's (`check --deploy`), and written as the verification needs."""

from django.conf import settings
from django.core.checks import Tags, Warning, register

from apps.audit.keys import chain_keys


@register(Tags.security, deploy=True)
def audit_chain_key_check(app_configs, **kwargs):
    if any(key.strip() for key in settings.AUDIT_CHAIN_KEY):
        return []
    return [Warning(
        "AUDIT_CHAIN_KEY is not set: the audit chain's key is derived from SECRET_KEY.",
        hint="Whoever has SECRET_KEY and write access to the database can then rewrite the journal undetected. "
             "Set AUDIT_CHAIN_KEY to a secret kept where the database's administrators cannot read it "
             "(docs/audit.md#the-key).",
        id="audit.W001",
    )]


@register(Tags.security)
def audit_chain_keys_check(app_configs, **kwargs):
    """AUDIT_CHAIN_KEY written as the verification needs it (every old key with its last event): the same
    problems make every verification fail, this says so at startup."""
    return [Warning(problem, hint="Until it is fixed, every verification of the journal fails with this reason.",
                    id="audit.W002") for problem in chain_keys().problems]
