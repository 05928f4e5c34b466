"""Who may open a dashboard page: a `Policy` decided by `allows` (apps.api.permissions), as for the API;
either one of the API's policies or a page-only one (FLEET_PAGE, SESSIONS_PAGE below).

Anonymous visitors are sent to the login page; a signed-in user whose roles the page's policy does not
allow gets 403. Per-object rules (instructors see only their own instances) are the selectors' job (404).
"""

from functools import wraps

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from apps.api.permissions import ANY_ROLE, STAFF, Policy, allows


def page(policy: Policy):
    """A view decorator: login required, then `policy` for the request's method. An async view (one that awaits
    a q task on daphne) gets the same checks, made before it starts."""

    def refusal(request, user):
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not allows(policy, user=user, method=request.method):
            raise PermissionDenied("Your role does not allow this page.")
        return None

    def decorate(view):
        if iscoroutinefunction(view):
            @wraps(view)
            async def async_wrapper(request, *args, **kwargs):
                refused = await sync_to_async(refusal)(request, await request.auser())
                return refused if refused is not None else await view(request, *args, **kwargs)

            return async_wrapper

        @wraps(view)
        def wrapper(request, *args, **kwargs):
            refused = refusal(request, request.user)
            return refused if refused is not None else view(request, *args, **kwargs)

        return wrapper

    return decorate


# The fleet page is the operators' (instructors may read workers through the API, but not act on them).
FLEET_PAGE = Policy("fleet-page", read=STAFF, write=STAFF)

# The sessions page is read-only for every role (instructors see only the sessions they own).
SESSIONS_PAGE = Policy("sessions-page", read=ANY_ROLE)
