"""gunicorn's settings for the synchronous application (labmanager.wsgi: API, dashboard, admin).

bin/serve web starts `gunicorn -c deploy/gunicorn.conf.py labmanager.wsgi:application`. Every value comes
from the environment (README, Configuration); the defaults follow the host's cores. Threaded workers
(gthread): a thread waiting on PostgreSQL or Redis lets another run, and each keeps its database
connection (DB_CONN_MAX_AGE). Nothing long runs here: the live streams and the requests that wait on CML
go to daphne (bin/serve asgi), so a short `timeout` holds.
"""

import os
import signal

cores = os.cpu_count() or 1
bind = os.environ.get("WEB_BIND", "127.0.0.1:8001")
workers = int(os.environ.get("WEB_PROCESSES") or cores)
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS") or 4)
timeout = int(os.environ.get("WEB_TIMEOUT", 60))  # a request still running after this is killed with its worker
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", 20))
keepalive = 75  # longer than nginx's upstream keepalive_timeout (60 s): nginx closes idle connections first
backlog = 2048
accesslog = None  # Django logs one line per request (apps.core.middleware.TraceIdMiddleware)
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "warning")
proc_name = "labmanager-web"
# The proxy's headers are read by Django (TRUSTED_PROXIES, SECURE_PROXY_SSL_HEADER), not by gunicorn.
forwarded_allow_ips = ""


def post_worker_init(worker):
    """On SIGTERM a worker finishes its requests; while it does, DELETE /session of an unknown id answers
    204 (the seed's shutdown rule, apps/sessions/shutdown.py)."""
    from apps.sessions import shutdown

    def handle_exit(sig, frame):
        shutdown.begin_shutdown()
        worker.handle_exit(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)
