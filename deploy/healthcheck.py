"""Container health checks (Dockerfile HEALTHCHECK, deploy/docker-compose.yml), standard library first.

    python deploy/healthcheck.py web        GET /api/diagnostics/health on this container's server (gunicorn or daphne)
    python deploy/healthcheck.py qcluster   a django-q2 cluster on this host reported itself in the last minute

Exit 0 when healthy, 1 otherwise (the reason on stderr).
"""

import os
import sys
import urllib.request


def web() -> int:
    port = os.environ.get("PORT", "8000")
    # The probe must name a host Django accepts: the first of ALLOWED_HOSTS (a leading dot or * dropped).
    host = os.environ.get("ALLOWED_HOSTS", "localhost").split(",")[0].strip().lstrip("*.") or "localhost"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/diagnostics/health", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"health check failed: {exc}", file=sys.stderr)
        return 1


def qcluster() -> int:
    import socket

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labmanager.settings_production")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    django.setup()
    from django_q.status import Stat

    mine = [stat for stat in Stat.get_all() if stat.host == socket.gethostname()]
    if not mine:
        print("no q cluster on this host reported to the broker's cache", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    checks = {"web": web, "qcluster": qcluster}
    if len(sys.argv) != 2 or sys.argv[1] not in checks:
        print(f"usage: {sys.argv[0]} {'|'.join(checks)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(checks[sys.argv[1]]())
