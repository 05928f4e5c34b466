"""Roles are Django groups: admin, operator, instructor. Superusers count as admin."""

from rest_framework.permissions import BasePermission, SAFE_METHODS

ADMIN, OPERATOR, INSTRUCTOR = "admin", "operator", "instructor"


def user_roles(user) -> frozenset[str]:
    if not user or not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_labmanager_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            names.add(ADMIN)
        cached = frozenset(names & {ADMIN, OPERATOR, INSTRUCTOR})
        user._labmanager_roles = cached
    return cached


def has_role(user, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))


class RolePermission(BasePermission):
    """`read_roles` may use safe methods, `write_roles` everything. Set both on the view."""

    message = "Your role does not allow this."

    def has_permission(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return False
        roles = view.write_roles if request.method not in SAFE_METHODS else view.read_roles
        return has_role(request.user, *roles)
