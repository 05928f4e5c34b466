"""The periodic re-check of provider sessions (apps.identity.recheck), after AuthenticationMiddleware.

A request without a session cookie costs nothing; one with a session reads it (as AuthenticationMiddleware
would) and calls the provider only when the session's last check is older than OIDC_ROLE_RECHECK_SECONDS.
"""

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings

from apps.core.middleware import SyncAndAsyncMiddleware
from apps.identity.recheck import session_recheck


class ProviderSessionRecheckMiddleware(SyncAndAsyncMiddleware):
    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        if settings.SESSION_COOKIE_NAME in request.COOKIES:
            session_recheck(request)
        return self.get_response(request)

    async def __acall__(self, request):
        if settings.SESSION_COOKIE_NAME in request.COOKIES:
            await sync_to_async(session_recheck)(request)
        return await self.get_response(request)
