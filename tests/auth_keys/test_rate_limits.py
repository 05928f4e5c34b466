"""Rate limits: a token bucket per user (API_RATE_LIMIT refill, API_RATE_BURST size), one per address for
unauthenticated requests (API_ANON_RATE_LIMIT) and for sign-ins (LOGIN_RATE_LIMIT); X-RateLimit-* on every
counted answer (Reset in epoch seconds, as in the rerobots seed); 429 problem+json with Retry-After.
With REDIS_URL the buckets live in Redis, updated atomically, shared by processes."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from apps.api.permissions import Public
from apps.api.throttling import Bucket, LoginRateThrottle, take
from apps.identity.services import api_key_create

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def limit_headers(response) -> tuple[int, int, int]:
    return (int(response["X-RateLimit-Limit"]), int(response["X-RateLimit-Remaining"]),
            int(response["X-RateLimit-Reset"]))


def assert_429(response) -> dict:
    assert response.status_code == 429, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert int(response["Retry-After"]) >= 1
    body = response.json()
    assert body["status"] == 429
    return body


@pytest.fixture
def small_limits(settings):
    settings.API_RATE_LIMIT = "30/min"  # a token every 2 s: nothing refills during a test's few requests
    settings.API_RATE_BURST = 3
    settings.API_ANON_RATE_LIMIT = "2/min"
    settings.LOGIN_RATE_LIMIT = "2/min"
    return settings


# --- headers ------------------------------------------------------------------------------------------

def test_every_answer_carries_the_headers_and_remaining_goes_down(admin_client):
    before = time.time()
    answers = [admin_client.get("/api/workers") for _ in range(3)]

    assert [r.status_code for r in answers] == [200, 200, 200]
    headers = [limit_headers(r) for r in answers]
    assert [h[0] for h in headers] == [100, 100, 100]  # the default burst: the bucket's size
    assert [h[1] for h in headers] == [99, 98, 97]
    for _, _, reset in headers:  # epoch seconds (when the bucket is full again), not a delay
        assert before <= reset <= time.time() + 2


def test_refused_answers_are_counted_and_carry_the_headers_too(instructor_client, anon_client):
    forbidden = instructor_client.post("/api/workers", {"name": "nope"}, format="json")
    allowed = instructor_client.get("/api/workers")
    unauthenticated = anon_client.get("/api/workers")

    assert forbidden.status_code == 403 and limit_headers(forbidden)[1] == 99
    assert allowed.status_code == 200 and limit_headers(allowed)[1] == 98
    assert unauthenticated.status_code == 401 and limit_headers(unauthenticated)[:2] == (5, 4)


def test_probes_are_never_counted(anon_client, small_limits):
    for _ in range(3):
        anon_client.get("/api/workers")

    response = anon_client.get("/api/diagnostics/health")

    assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response


def test_the_remote_lab_api_has_its_own_budget_with_the_same_headers(admin_client, small_limits, settings):
    settings.SESSION_API_RATE_LIMIT = "50/min"
    for _ in range(3):
        admin_client.get("/api/workers")
    assert_429(admin_client.get("/api/workers"))

    response = admin_client.get("/api/remote-lab/debug/health")

    assert response.status_code == 200
    assert limit_headers(response)[:2] == (50, 49)


# --- the user's bucket -------------------------------------------------------------------------------

def test_an_empty_bucket_answers_429_problem_with_retry_after(admin_client, small_limits):
    assert [admin_client.get("/api/workers").status_code for _ in range(3)] == [200, 200, 200]

    response = admin_client.get("/api/workers")

    body = assert_429(response)
    assert body["instance"] == "/api/workers"
    assert 1 <= int(response["Retry-After"]) <= 3  # a token every 2 s
    limit, remaining, reset = limit_headers(response)
    assert (limit, remaining) == (3, 0)
    assert reset > time.time()


def test_two_users_do_not_share_a_bucket(admin_client, operator_client, small_limits):
    for _ in range(3):
        admin_client.get("/api/workers")
    assert_429(admin_client.get("/api/workers"))

    response = operator_client.get("/api/workers")

    assert response.status_code == 200
    assert limit_headers(response)[1] == 2


def test_the_keys_of_one_user_share_the_users_bucket(admin_user, small_limits):
    first, second = APIClient(), APIClient()
    first.credentials(HTTP_X_API_KEY=api_key_create(user=admin_user, actor="tests")[1])
    second.credentials(HTTP_X_API_KEY=api_key_create(user=admin_user, actor="tests")[1])

    assert [c.get("/api/workers").status_code for c in (first, second, first)] == [200, 200, 200]
    assert_429(second.get("/api/workers"))


def rewind_bucket(key: str, seconds: float) -> None:
    """What `seconds` passing does to the bucket `key`, without waiting: its last update moves that far into
    the past (the refill is computed from it), in either store: the Redis hash (tokens, ts; ts from Redis's
    clock, which freezegun cannot reach) or the cache entry (tokens, ts)."""
    from apps.api.buckets import _redis_client_and_key

    found = _redis_client_and_key(f"ratelimit:{key}")
    if found is not None:
        client, full_key = found
        client.hset(full_key, "ts", repr(float(client.hget(full_key, "ts")) - seconds))
    else:
        from django.core.cache import cache

        tokens, ts = cache.get(f"ratelimit:{key}")
        cache.set(f"ratelimit:{key}", (tokens, ts - seconds), 3600)


def test_a_burst_passes_at_once_then_the_bucket_refills_at_the_rate():
    bucket = Bucket(capacity=5, rate=0.01)  # 5 at once, then one every 100 s: the test's own time adds nothing

    burst = [take("test:burst", bucket) for _ in range(6)]

    assert [d.allowed for d in burst] == [True] * 5 + [False]
    assert [d.remaining for d in burst] == [4, 3, 2, 1, 0, 0]
    assert 99 < burst[-1].retry_after <= 100
    rewind_bucket("test:burst", 80)  # 0.8 of a token: still refused
    assert take("test:burst", bucket).allowed is False
    rewind_bucket("test:burst", 30)  # 1.1 tokens: one more passes, the next does not
    assert [take("test:burst", bucket).allowed for _ in range(2)] == [True, False]


def test_the_burst_setting_is_the_bucket_size_and_never_above_the_rate():
    assert Bucket.from_settings("1000/min", 100) == Bucket(capacity=100, rate=1000 / 60)
    assert Bucket.from_settings("3/min", 100) == Bucket(capacity=3, rate=3 / 60)
    assert Bucket.from_settings("5/min") == Bucket(capacity=5, rate=5 / 60)


def test_concurrent_takes_never_overdraw_the_bucket():
    bucket = Bucket(capacity=40, rate=0.001)
    allowed = []

    def hammer():
        allowed.extend(take("test:threads", bucket).allowed for _ in range(20))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(allowed) == 80
    assert sum(allowed) == 40


# --- per address -------------------------------------------------------------------------------------

def test_unauthenticated_requests_are_limited_per_address(small_limits):
    client = APIClient(REMOTE_ADDR="198.51.100.7")
    first, second = client.get("/api/workers"), client.get("/api/openapi.json")  # refused or public: one bucket

    third = client.get("/api/workers")

    assert (first.status_code, second.status_code) == (401, 200)
    assert [limit_headers(r)[1] for r in (first, second)] == [1, 0]
    assert_429(third)
    assert APIClient(REMOTE_ADDR="198.51.100.8").get("/api/workers").status_code == 401  # another address


def test_bad_keys_are_counted_against_the_address(small_limits):
    client = APIClient(REMOTE_ADDR="198.51.100.9")
    client.credentials(HTTP_X_API_KEY="lm_not-a-key")

    statuses = [client.get("/api/workers").status_code for _ in range(3)]

    assert statuses == [401, 401, 429]


def test_local_sign_in_attempts_are_limited_per_address(admin_user, small_limits):
    client = APIClient(REMOTE_ADDR="198.51.100.10")
    wrong = {"username": admin_user.username, "password": "wrong"}

    attempts = [client.post("/accounts/login/", wrong) for _ in range(2)]
    refused = client.post("/accounts/login/", {"username": admin_user.username, "password": "pw-admin1"})

    assert [a.status_code for a in attempts] == [200, 200]  # the form again, with its error
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert limit_headers(refused)[:2] == (2, 0)
    assert "_auth_user_id" not in client.session  # the right password did not get through either
    assert client.get("/accounts/login/").status_code == 200  # the page itself is not limited
    other = APIClient(REMOTE_ADDR="198.51.100.11")
    assert other.post("/accounts/login/", {"username": admin_user.username, "password": "pw-admin1"}).status_code == 302


def test_the_login_throttle_class_limits_a_drf_sign_in_view(small_limits):
    class SignIn(APIView):  # what a DRF sign-in endpoint declares
        authentication_classes = []
        permission_classes = [Public]
        throttle_classes = [LoginRateThrottle]

        def post(self, request):
            from rest_framework.response import Response

            return Response({"ok": True})

    view = SignIn.as_view()
    factory = APIRequestFactory()

    statuses = [view(factory.post("/api/auth/sign-in", REMOTE_ADDR="198.51.100.12")).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert view(factory.get("/api/auth/sign-in", REMOTE_ADDR="198.51.100.12")).status_code == 405  # GET not counted


def test_x_forwarded_for_is_not_trusted_without_trusted_proxies(small_limits):
    statuses = [APIClient(HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").get("/api/workers").status_code for n in range(3)]

    assert statuses == [401, 401, 429]  # one address (REMOTE_ADDR), whatever the header claims


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(small_limits, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]  # APIClient's REMOTE_ADDR: our proxy
    statuses = [APIClient(HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").get("/api/workers").status_code for n in range(3)]

    assert statuses == [401, 401, 401]  # three clients, one request each


# --- the production servers (bin/serve all: nginx, gunicorn, daphne) ------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_production_servers_send_the_headers_and_the_429(operator_user):
    import httpx

    from tests.events.conftest import server_process

    _, raw = api_key_create(user=operator_user, actor="tests")  # committed: the server process sees it
    with server_process({"API_RATE_LIMIT": "60/min", "API_RATE_BURST": "2", "API_ANON_RATE_LIMIT": "1/min",
                         "LOG_LEVEL": "WARNING"}) as url:
        with httpx.Client(base_url=url, timeout=20) as http:
            keyed = [http.get("/api/workers", headers={"X-API-Key": raw}) for _ in range(3)]
            anonymous = [http.get("/api/workers") for _ in range(2)]

    assert [r.status_code for r in keyed] == [200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in keyed] == ["1", "0", "0"]
    assert keyed[2].headers["Content-Type"].startswith("application/problem+json")
    assert int(keyed[2].headers["Retry-After"]) >= 1
    assert [r.status_code for r in anonymous] == [401, 429]  # counted after the refusal, then throttled
    assert anonymous[0].headers["X-RateLimit-Limit"] == "1"


# --- across processes (Redis) ----------------------------------------------------------------------------

TAKER = """
import django, json, sys
django.setup()
from apps.api.throttling import Bucket, take
bucket = Bucket(capacity=int(sys.argv[2]), rate=0.001)
print(json.dumps([take(sys.argv[1], bucket).allowed for _ in range(int(sys.argv[3]))]))
"""


def _takers(key: str, capacity: int, per_process: int, processes: int) -> list[bool]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "labmanager.settings", "PYTHONPATH": str(ROOT),
           "REDIS_URL": django_settings.REDIS_URL}
    procs = [subprocess.Popen([sys.executable, "-c", TAKER, key, str(capacity), str(per_process)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.extend(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="the cross-process bucket needs Redis (REDIS_URL)")
def test_with_redis_the_bucket_holds_across_processes():
    taken_elsewhere = _takers("test:processes", capacity=5, per_process=3, processes=1)
    assert taken_elsewhere == [True, True, True]

    here = [take("test:processes", Bucket(capacity=5, rate=0.001)) for _ in range(3)]

    assert [d.allowed for d in here] == [True, True, False]
    assert here[1].remaining == 0


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="the cross-process bucket needs Redis (REDIS_URL)")
def test_with_redis_concurrent_processes_never_overdraw_the_bucket():
    allowed = _takers("test:race", capacity=50, per_process=40, processes=3)

    assert len(allowed) == 120
    assert sum(allowed) == 50


def test_admin_sign_in_attempts_are_limited_per_address_like_the_local_login(admin_user, small_limits):
    client = APIClient(REMOTE_ADDR="198.51.100.20")
    wrong = {"username": admin_user.username, "password": "wrong", "next": "/admin/"}

    attempts = [client.post("/admin/login/", wrong) for _ in range(2)]
    refused = client.post("/admin/login/", {"username": admin_user.username, "password": "pw-admin1", "next": "/admin/"})

    assert [a.status_code for a in attempts] == [200, 200]  # the admin's form again, with its error
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert limit_headers(refused)[:2] == (2, 0)
    assert "_auth_user_id" not in client.session  # the right password did not get through either
    assert client.get("/admin/login/").status_code == 200  # the page itself is not limited
    assert APIClient(REMOTE_ADDR="198.51.100.21").post(
        "/admin/login/", {"username": admin_user.username, "password": "pw-admin1", "next": "/admin/"}).status_code == 302


def test_the_admin_login_bucket_is_the_sign_in_bucket(admin_user, small_limits):
    """One budget of guesses per address across both password forms, not one each."""
    client = APIClient(REMOTE_ADDR="198.51.100.22")
    wrong = {"username": admin_user.username, "password": "wrong"}

    assert client.post("/accounts/login/", wrong).status_code == 200
    assert client.post("/admin/login/", wrong).status_code == 200
    assert client.post("/admin/login/", wrong).status_code == 429
