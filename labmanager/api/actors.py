"""Who did it, as written into the audit journal."""

from labmanager.models import ApiKey


def actor_for(request) -> str:
    user = request.user
    if isinstance(request.auth, ApiKey):
        return api_key_actor(user, request.auth)
    return user.get_username() if user.is_authenticated else "anonymous"


def api_key_actor(user, api_key: ApiKey) -> str:
    return f"{user.get_username()} (apikey:{api_key.prefix})"
