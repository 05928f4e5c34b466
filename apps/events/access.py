"""Who may see which live event, and the subscriber's own filters (docs/events.md).

- admins and operators: every event;
- instructors: `worker_status` (they may read workers), `lablet_instance_status` of the instances they
  created, `session_status` of the sessions they own; never other `audit` events;
- an authenticated user without a role: refused (403).
A viewer's rights are read when the stream opens; the stream ends when the journal says they changed
(Viewer.access_changed_by).
"""

from dataclasses import dataclass, field

from apps.api.permissions import EVENTS, allows, privileged
from apps.identity.services_provider import ACCESS_CHANGED_EVENTS

OWNED_RESOURCES = ("lablet_instance", "session")


class NotAuthenticated(Exception):
    pass


class NotAllowed(Exception):
    pass


@dataclass(frozen=True)
class Viewer:
    user_pk: int
    username: str
    privileged: bool  # admin or operator: sees everything
    as_of: int = 0  # the journal's head when these rights were read

    def access_changed_by(self, event) -> bool:
        """The journal says the user's roles changed or the user was deprovisioned after these rights were
        read: the stream ends (the client reconnects with the rights it has now, if any)."""
        return (event.sequence > self.as_of and event.resource_type == "user" and event.resource_id == self.username
                and event.event_type in ACCESS_CHANGED_EVENTS)

    def can_see(self, event) -> bool:
        if self.privileged:
            return True
        if event.resource_type == "worker":
            return True
        if event.resource_type in OWNED_RESOURCES:
            return event.owner_pk is not None and event.owner_pk == self.user_pk
        return False


def journal_head() -> int:
    """Synchronous. Read before the credential is checked, it becomes the viewer's `as_of`: a change of the
    user's roles journalled after it ends the stream, one journalled before is in the rights read."""
    from apps.events.hub import head_sequence

    return head_sequence()


def viewer_for(user, *, as_of: int = 0) -> Viewer:
    """Synchronous (reads the user's groups). Raises NotAuthenticated / NotAllowed."""
    if user is None or not user.is_authenticated:
        raise NotAuthenticated("Authentication credentials were not provided.")
    if not allows(EVENTS, user=user):
        raise NotAllowed("Your role does not allow this.")
    return Viewer(user_pk=user.pk, username=user.get_username(), privileged=privileged(user), as_of=as_of)


def user_from_api_key(raw: str):
    """The user of an active API key or of a provider's access token (a JWT), or raise NotAuthenticated /
    NotAllowed (same rules as the REST API)."""
    from rest_framework import exceptions

    from apps.identity.authentication import ApiKeyAuthentication
    from apps.identity.bearer import user_for_bearer_token
    from apps.identity.tokens import looks_like_jwt

    if looks_like_jwt(raw):
        try:
            return user_for_bearer_token(raw)[0]
        except exceptions.PermissionDenied as error:
            raise NotAllowed(str(error.detail)) from error
        except exceptions.APIException as error:
            raise NotAuthenticated(str(error.detail)) from error

    class _Headers:  # ApiKeyAuthentication only reads request.headers
        def __init__(self, key):
            self.headers = {"X-API-Key": key}

    try:
        result = ApiKeyAuthentication().authenticate(_Headers(raw))
    except exceptions.AuthenticationFailed as error:
        raise NotAuthenticated(str(error.detail)) from error
    return result[0]


def key_from_headers(headers) -> str | None:
    """X-API-Key, or Authorization: Bearer <key>."""
    raw = headers.get("X-API-Key") or headers.get("x-api-key")
    if raw:
        return raw.strip()
    scheme, _, credentials = (headers.get("Authorization") or headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def _split(value) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(str(v).strip() for v in value if str(v).strip())


@dataclass(frozen=True)
class Filters:
    """`worker_ids`: the worker's own events and every event whose metadata names one of them.
    `instance_ids`: the lablet instance's own events (and any event whose metadata names it as `instance_id`).
    `event_types`: each entry is an event type (`worker.running`), a prefix (`lablet_instance.*`), a
    named event (`worker_status`) or a CloudEvents type (`io.lablet.instance.running`). Empty: all."""

    worker_ids: frozenset[str] = field(default_factory=frozenset)
    event_types: frozenset[str] = field(default_factory=frozenset)
    instance_ids: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, *, worker_ids=None, event_types=None, instance_ids=None) -> "Filters":
        return cls(worker_ids=_split(worker_ids), event_types=_split(event_types), instance_ids=_split(instance_ids))

    def match(self, event) -> bool:
        if self.worker_ids and event.worker_id not in self.worker_ids:
            return False
        if self.instance_ids and event.instance_id not in self.instance_ids:
            return False
        if self.event_types:
            return self._type_match(event)
        return True

    def _type_match(self, event) -> bool:
        from apps.events.payload import cloudevent_type

        types = self.event_types
        if event.event_type in types or event.name in types:
            return True
        if cloudevent_type(event.event_type) in types:
            return True
        return any(t.endswith(".*") and event.event_type.startswith(t[:-1]) for t in types)
