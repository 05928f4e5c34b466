"""Who did it, as written into the audit journal."""

from apps.api.models import ApiKey


def actor_for(request) -> str:
    user = request.user
    if isinstance(request.auth, ApiKey):
        return f"{user.get_username()} (apikey:{request.auth.prefix})"
    return user.get_username() if user.is_authenticated else "anonymous"
