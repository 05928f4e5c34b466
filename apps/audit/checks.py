"""Deployment check (`manage.py check --deploy`): the audit chain's key should not be SECRET_KEY's."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


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
