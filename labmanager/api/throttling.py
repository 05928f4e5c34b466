"""Per-user (or per-IP for anonymous) rate limit, read from settings.API_RATE_LIMIT at call time."""

from django.conf import settings
from rest_framework.throttling import UserRateThrottle


class PerUserRateThrottle(UserRateThrottle):
    scope = "user"

    def get_rate(self):
        return settings.API_RATE_LIMIT

    def allow_request(self, request, view):
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
