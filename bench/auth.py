"""Benchmark the cost of authentication per API request on the production command line: requests per second
with no credentials (GET /api/diagnostics/health, which authenticates nobody), with an API key and with a
bearer JWT (GET /api/auth/me and GET /api/workers?limit=1, the same views for both credentials), side by side.

    .venv/bin/python -m bench.auth [--seconds 4] [--rounds 3] [--connections 8]

The server is `bin/serve all` (bench/common.py ServeAll: nginx on a free 127.0.0.1 port in front of gunicorn,
labmanager.wsgi with its default processes and threads, and daphne), with labmanager.settings_production
(LOG_LEVEL=WARNING: no line per request); these API paths are routed by nginx to gunicorn. The client says
X-Forwarded-Proto: https, as the TLS-terminating load balancer in front of nginx would.
The JWT is RS256, signed by a key this script holds; its JWKS and discovery document are served by a tiny
HTTP server here on 127.0.0.1, which counts JWKS requests (no provider call per request: one for the whole
run with a shared Redis cache, at most one per server process with the in-process cache). Scenarios run in
interleaved rounds (the median is reported) over keep-alive connections to nginx (the harness's asyncio client
and bounded load loop, bench/common.py Connection and bounded_load; every answer's status is counted).
Uses PostgreSQL (a database created and dropped here) when 127.0.0.1:5432 answers, else SQLite; the cache
is in-process (no REDIS_URL: each server process has its own) unless REDIS_URL is set. Rate limits are
raised out of the way. Bounded in time; always stops the servers. Goal: JWT within 15 % of API key.
"""

import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.common import (BENCH_DIR, HOST, ROOT, Connection, ServeAll, argument_parser, bounded_load, django_run,
                          migrate, pg_available, pg_create, pg_drop, process_tree, production_env, run)

LOG = BENCH_DIR / "auth-labmanager.log"
PG_DB = "labmanager_bench_auth"
REALM = "/realms/labmanager"
CLIENT_ID = "labmanager-dashboard"


class Issuer:
    """Discovery and JWKS of a Keycloak-shaped realm, on 127.0.0.1, counting JWKS requests."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "bench-rs256"
        self.jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key())),
                    "kid": self.kid, "use": "sig", "alg": "RS256"}
        self.jwks_requests = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                oidc = f"{issuer.url}/protocol/openid-connect"
                if self.path == f"{REALM}/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{oidc}/certs", "authorization_endpoint": f"{oidc}/auth",
                            "token_endpoint": f"{oidc}/token", "userinfo_endpoint": f"{oidc}/userinfo"}
                elif self.path == f"{REALM}/protocol/openid-connect/certs":
                    issuer.jwks_requests += 1
                    body = {"keys": [issuer.jwk]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{REALM}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def token(self, lifetime: int) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "sub": "bench-sub", "aud": [CLIENT_ID, "account"], "azp": "labmanager-cli",
                  "typ": "Bearer", "iat": now, "nbf": now, "exp": now + lifetime, "preferred_username": "bench-jwt",
                  "email": "bench@example.test", "realm_access": {"roles": ["operator"]}}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


async def measure(port: int, path: str, headers: dict, seconds: float, connections: int,
                  max_requests: int) -> tuple[float, dict]:
    """`connections` keep-alive connections, each with one GET `path` in flight, for at most `seconds` and
    `max_requests` requests; returns (requests per second, {status: count})."""
    clients = [Connection(port, {"Connection": "keep-alive", "X-Forwarded-Proto": "https", **headers})
               for _ in range(connections)]
    counts: dict[int, int] = {}

    async def send(worker: int, n: int) -> None:
        status, _ = await clients[worker].request("GET", path)
        counts[status] = counts.get(status, 0) + 1

    try:
        result = await bounded_load(send, workers=connections, seconds=seconds, max_requests=max_requests)
    finally:
        for client in clients:
            client.close()
    return result["requests"] / result["elapsed"], counts


def scenarios_run(port: int, key: str, token: str, args, issuer: "Issuer", jwks_expected: str) -> None:
    """The scenarios, in interleaved rounds, against nginx on `port`; prints the medians and the checks."""
    scenarios = {
        "no auth   GET /api/diagnostics/health": ("/api/diagnostics/health", {}),
        "API key   GET /api/auth/me": ("/api/auth/me", {"X-API-Key": key}),
        "JWT       GET /api/auth/me": ("/api/auth/me", {"Authorization": f"Bearer {token}"}),
        "API key   GET /api/workers?limit=1": ("/api/workers?limit=1", {"X-API-Key": key}),
        "JWT       GET /api/workers?limit=1": ("/api/workers?limit=1", {"Authorization": f"Bearer {token}"}),
    }
    for path, headers in scenarios.values():  # warm-up: first JWKS fetch, user sync, connections
        asyncio.run(measure(port, path, headers, 1.0, 2, args.max_requests))
    rates: dict[str, list[float]] = {name: [] for name in scenarios}
    statuses: dict[str, dict] = {name: {} for name in scenarios}
    for _ in range(args.rounds):
        for name, (path, headers) in scenarios.items():
            rps, counts = asyncio.run(measure(port, path, headers, args.seconds, args.connections,
                                              args.max_requests))
            rates[name].append(rps)
            for status, count in counts.items():
                statuses[name][status] = statuses[name].get(status, 0) + count
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name in scenarios:
        other = {s: c for s, c in statuses[name].items() if s != 200}
        print(f"  {name:38s} {median[name]:7.0f} req/s (rounds: {', '.join(f'{r:.0f}' for r in rates[name])})"
              + (f"  NON-200: {other}" if other else ""))
    for view in ("/api/auth/me", "/api/workers?limit=1"):
        by_key = median[f"API key   GET {view}"]
        by_jwt = median[f"JWT       GET {view}"]
        gap = (by_key - by_jwt) / by_key * 100
        print(f"  {view}: JWT {'slower' if gap > 0 else 'faster'} than API key by {abs(gap):.1f} % "
              f"(goal: within 15 %: {'met' if gap <= 15 else 'NOT met'})")
    print(f"  JWKS requests to the provider during the run: {issuer.jwks_requests} (expected {jwks_expected})")


def main() -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--seconds", type=float, default=4.0, help="per scenario and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="per scenario and round")
    args = parser.parse_args()

    use_pg = pg_available()
    tmp = tempfile.TemporaryDirectory(prefix="bench-auth-")
    issuer = Issuer()
    env = production_env(ALLOWED_HOSTS=HOST, LOG_LEVEL="WARNING", OIDC_ISSUER=issuer.url, OIDC_CLIENT_ID=CLIENT_ID,
                         API_RATE_LIMIT="100000000/min", API_RATE_BURST="100000000",
                         API_ANON_RATE_LIMIT="100000000/min")
    if env.get("REDIS_URL"):
        env.setdefault("REDIS_PREFIX", "lm-bench-auth")
    print(f"Authentication cost: database {'PostgreSQL' if use_pg else 'SQLite (PostgreSQL unavailable)'}, cache "
          f"{'Redis' if env.get('REDIS_URL') else 'in-process'}, bin/serve all (nginx -> gunicorn), "
          f"{args.connections} keep-alive connections, {args.rounds} rounds x {args.seconds:.0f} s per scenario; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    try:
        if use_pg:
            env["DATABASE_URL"] = pg_create(PG_DB)
        else:
            env.pop("DATABASE_URL", None)
            env["SQLITE_PATH"] = str(Path(tmp.name) / "bench.sqlite3")
        migrate(env)
        key = django_run(env, "from apps.identity.services import api_key_create, user_ensure_with_role\n"
                         "u, _ = user_ensure_with_role(username='bench-key', role='operator', actor='bench')\n"
                         "print(api_key_create(user=u, actor='bench')[1])").strip().splitlines()[-1]
        token = issuer.token(lifetime=int(args.seconds * args.rounds * 5 + 600))
        LOG.parent.mkdir(parents=True, exist_ok=True)
        LOG.write_bytes(b"")
        with ServeAll(env, LOG) as server:
            print(f"  server: bin/serve all (pid {server.pid}, {len(process_tree(server.pid))} processes) on "
                  f"{server.url}; log {LOG.relative_to(ROOT)}", flush=True)
            # The JWKS is kept in Django's cache: shared through Redis, else one copy per gunicorn process.
            scenarios_run(server.port, key, token, args, issuer, "1" if env.get("REDIS_URL") else
                          f"at most 1 per gunicorn process: {int(env.get('WEB_PROCESSES') or os.cpu_count() or 1)}")
        return 0
    finally:
        issuer.stop()
        if use_pg:
            pg_drop(PG_DB)
        tmp.cleanup()


if __name__ == "__main__":
    run(main)
