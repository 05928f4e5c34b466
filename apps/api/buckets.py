"""Token buckets in the cache: the arithmetic of every rate limit (apps.api.throttling uses it).

With Redis as the default cache (Django's backend or django-redis) a bucket is one hash updated by a Lua
script: atomic, shared by every process, timed by the Redis server's clock; if Redis fails the request is
let through (a limit is protection, not a reason to refuse everyone) and a warning logged. Any other cache
(the embedded LocMem default): the same arithmetic under a lock of this process (exact for LocMem, which
is per process; best effort for a shared non-Redis cache).
"""

import logging
import math
import threading
import time
from dataclasses import dataclass

from django.core.cache import cache, caches
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period.strip().lower()]


@dataclass(frozen=True)
class Bucket:
    """`capacity` tokens, refilled at `rate` tokens a second."""

    capacity: int
    rate: float

    @classmethod
    def from_settings(cls, rate: str, burst: int | None = None) -> "Bucket":
        """"1000/min" with burst 100 → 100 tokens, 1000/60 a second. The burst never exceeds the count
        (a "3/min" limit is a bucket of 3); no burst: the count."""
        count, period = parse_rate(rate)
        capacity = min(burst, count) if burst else count
        return cls(capacity=max(capacity, 1), rate=count / period)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # epoch seconds when the bucket is full again
    retry_after: float  # seconds until the next token (0 when allowed)

    def as_headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset)}


def _decision(bucket: Bucket, allowed: bool, tokens: float, now: float) -> Decision:
    return Decision(
        allowed=allowed,
        limit=bucket.capacity,
        remaining=max(int(math.floor(tokens + 1e-9)), 0),
        reset=math.ceil(now + (bucket.capacity - tokens) / bucket.rate),
        retry_after=0.0 if allowed else max((1 - tokens) / bucket.rate, 0.0),
    )


# KEYS[1]: the bucket (a hash: tokens, ts). ARGV: capacity, rate (tokens/s). Returns {allowed, tokens, now}
# as strings (Lua numbers would be truncated to integers on the way out).
TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
else
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {tostring(allowed), tostring(tokens), tostring(now)}
"""

_script = None  # redis-py's Script: EVALSHA, loading the script on a NOSCRIPT answer
_local_lock = threading.Lock()


def _redis_client_and_key(key: str):
    """(redis client, full key) when the default cache is Redis (Django's backend or django-redis), else None."""
    backend = caches["default"]  # the backend itself (`cache` is a proxy to it)
    module = type(backend).__module__
    if module == "django.core.cache.backends.redis":
        full = backend.make_and_validate_key(key)
        return backend._cache.get_client(full, write=True), full
    if module.startswith("django_redis"):
        return backend.client.get_client(write=True), backend.make_and_validate_key(key)
    return None


def take(key: str, bucket: Bucket) -> Decision:
    """Take one token from the bucket stored under `key` (a cache key)."""
    found = _redis_client_and_key(f"ratelimit:{key}")
    if found is not None:
        global _script
        client, full_key = found
        try:
            if _script is None:
                _script = client.register_script(TAKE_SCRIPT)
            allowed, tokens, now = _script(keys=[full_key], args=[bucket.capacity, repr(bucket.rate)], client=client)
        except RedisError as error:  # fail open: a limit is protection, not a reason to refuse everyone
            log.warning("Rate limit not applied, Redis failed: %s", error)
            return _decision(bucket, True, bucket.capacity - 1, time.time())
        return _decision(bucket, allowed in (b"1", "1"), float(tokens), float(now))
    cache_key = f"ratelimit:{key}"
    with _local_lock:
        now = time.time()
        state = cache.get(cache_key)
        tokens = bucket.capacity if state is None else min(bucket.capacity, state[0] + max(0.0, now - state[1]) * bucket.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        cache.set(cache_key, (tokens, now), math.ceil((bucket.capacity - tokens) / bucket.rate) + 1)
    return _decision(bucket, allowed, tokens, now)
