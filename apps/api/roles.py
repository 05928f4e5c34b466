"""The role vocabulary. Roles are Django groups: admin, operator, instructor; superusers count as admin.

A request's roles are the user's roles, narrowed by the credential it came with: an API key carries one
role (at most its user's), and requests made with it have only that role. Who may do what with these
roles is decided in apps.api.permissions (the matrix is in docs/security.md).
"""

ADMIN, OPERATOR, INSTRUCTOR = "admin", "operator", "instructor"
ROLES = (ADMIN, OPERATOR, INSTRUCTOR)  # highest first: the default role of a new API key is the first held

# What a role may hand on to an API key: an admin may make operator and instructor keys too.
GRANTABLE = {ADMIN: frozenset(ROLES), OPERATOR: frozenset({OPERATOR}), INSTRUCTOR: frozenset({INSTRUCTOR})}

_CACHE = "_labmanager_roles"  # effective roles of this user object (one request's user)


def user_roles(user) -> frozenset[str]:
    """The roles in force for `user`: its groups, or what its credential narrowed them to."""
    if not user or not user.is_authenticated:
        return frozenset()
    cached = getattr(user, _CACHE, None)
    if cached is None:
        cached = group_roles(user)
        setattr(user, _CACHE, cached)
    return cached


def group_roles(user) -> frozenset[str]:
    """The user's own roles (its groups), whatever credential the request used."""
    names = set(user.groups.values_list("name", flat=True))
    if user.is_superuser:
        names.add(ADMIN)
    return frozenset(names & set(ROLES))


def grantable_roles(roles) -> frozenset[str]:
    return frozenset().union(*(GRANTABLE[role] for role in roles)) if roles else frozenset()


def narrow_roles(user, role: str) -> frozenset[str]:
    """Requests made with a credential that carries `role`: that role alone, if the user's own roles still
    grant it (a user demoted after making the key loses it), else none. Blank: the user's roles."""
    own = group_roles(user)
    effective = own if not role else (frozenset({role}) if role in grantable_roles(own) else frozenset())
    setattr(user, _CACHE, effective)
    return effective


def has_role(user, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))

