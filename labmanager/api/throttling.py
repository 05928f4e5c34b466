"""Per-user (per-IP when anonymous) rate limit: a fixed-window counter in the cache (Redis in
production, so it holds across processes). settings.API_RATE_LIMIT ("1000/min") is read per call.

Two cache operations a request, whatever the rate; DRF's SimpleRateThrottle instead stores and
re-pickles the timestamp of every request in the window."""

import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period.strip().lower()]


class PerUserRateThrottle(BaseThrottle):
    def allow_request(self, request, view):
        limit, period = parse_rate(settings.API_RATE_LIMIT)
        user = getattr(request, "user", None)
        ident = f"user:{user.pk}" if user is not None and user.is_authenticated else f"ip:{self.get_ident(request)}"
        now = time.time()
        window = int(now // period)
        key = f"ratelimit:{ident}:{period}:{window}"
        if cache.add(key, 1, period + 1):
            count = 1
        else:
            try:
                count = cache.incr(key)
            except ValueError:  # the window's key expired between add and incr
                cache.set(key, 1, period + 1)
                count = 1
        self._wait = period - (now % period)
        request.rate_limit = {"limit": limit, "remaining": max(limit - count, 0), "reset": int(self._wait) + 1}
        return count <= limit

    def wait(self):
        return self._wait
