"""LabManager settings: one flat file, every value from the environment with a safe default.

Embedded default (nothing set): SQLite under var/, in-memory channel layer and cache,
django-q2 on the ORM broker. Set DATABASE_URL / REDIS_URL for PostgreSQL / Redis.
Every variable is listed in .env.example (tests/test_settings.py keeps the two in step) and README.md
("Configuration"). Code reads these as `settings.NAME`, never with a default of its own. Importing this
module writes nothing: `make setup` creates var/, and each writer creates its own directory.
"""

import sys
from pathlib import Path

import environ
from corsheaders.defaults import default_headers as corsheaders_default_headers

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-labmanager-key-change-me-in-production-0123456789")
# Secrets stored in the database (a worker's CML password) are encrypted with these Fernet keys
# (comma-separated; the first encrypts, all decrypt). Empty: derived from SECRET_KEY (apps/core/encryption.py).
FIELD_ENCRYPTION_KEY = env.list("FIELD_ENCRYPTION_KEY", default=[])
# The audit chain's HMAC key(s), kept out of the database (comma-separated; the first seals and verifies, each
# old one is written <key>@<the last event it sealed> and verifies up to that event only).
# Empty: derived from SECRET_KEY, which then protects the journal (apps/audit/keys.py, docs/audit.md).
AUDIT_CHAIN_KEY = env.list("AUDIT_CHAIN_KEY", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "django_prometheus",
    "corsheaders",
    # The project's apps, lowest layer first (docs/architecture.md; import-linter checks the layers).
    "apps.core",
    "apps.api",
    "apps.audit",
    "apps.identity",
    "apps.webhooks",
    "apps.workers",
    "apps.lablets",
    "apps.sessions",
    "apps.fleet",
    "apps.events",
    "apps.dashboard",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",  # outermost: times the whole stack
    "apps.core.middleware.ClientAddressMiddleware",  # everything after reads REMOTE_ADDR
    "apps.core.middleware.TraceIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "apps.core.csp.ContentSecurityPolicyMiddleware",  # unloaded while CONTENT_SECURITY_POLICY is empty
    # CORS for /api (CORS_* below): after the client address, trace id and security headers, which its
    # answers to preflights carry too; before CommonMiddleware and everything that authenticates or counts,
    # so a preflight (OPTIONS + Access-Control-Request-Method) is answered without credentials and never
    # reaches the rate limits or the journal, and every other answer (401, 429 too) carries the headers.
    "corsheaders.middleware.CorsMiddleware",
    "apps.core.middleware.StaticFilesMiddleware",  # whitenoise, in the mode of the view (async under daphne)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.identity.middleware.ProviderSessionRecheckMiddleware",  # provider sessions, once per OIDC_ROLE_RECHECK_SECONDS
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.api.throttling.RateLimitHeadersMiddleware",  # X-RateLimit-* (outside the problem+json rewrite)
    "apps.api.middleware.ApiProblemMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
# Content-Security-Policy header (apps/core/csp.py, docs/operations.md#content-security-policy): none in
# development; the production profile's default is apps.core.csp.build_policy's.
CONTENT_SECURITY_POLICY = env.str("CONTENT_SECURITY_POLICY", default="")

# The proxies in front (nginx: bin/serve, deploy/): only a request whose socket peer is in one of these
# networks has its client address taken from X-Forwarded-For (the right-most address not a proxy).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

ROOT_URLCONF = env.str("ROOT_URLCONF", default="labmanager.urls")
ASGI_APPLICATION = "labmanager.asgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.dashboard.context.navigation",
            ],
        },
    },
]

# --- database -------------------------------------------------------------
SQLITE_PATH = env.str("SQLITE_PATH", default=str(VAR_DIR / "labmanager.sqlite3"))
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent writers (daphne threads + q cluster processes): see shared/STACK.md.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
    }
    DATABASES["default"]["TEST"] = {"NAME": env.str("SQLITE_TEST_PATH", default=str(VAR_DIR / "test.sqlite3"))}
# Each gunicorn thread keeps its connection between requests (checked before reuse). daphne runs sync
# code in a new thread per request, where kept connections would pile up: bin/serve starts it with 0.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
# A kept connection is checked (SELECT 1) before a request uses it: one round trip per request, so that a
# connection the database closed (a restart, a failover) costs no failed request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_POSTGRES = DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql")
# Optional PostgreSQL connection pool (psycopg-pool, Django's OPTIONS["pool"]): a request borrows an open
# connection instead of opening its own. Meant for daphne (bin/serve asgi), whose request threads keep
# no connection (DB_CONN_MAX_AGE 0): set DATABASE_POOL in its environment only. Never in the q cluster:
# its workers are forked, and a pool's connections must not be shared across fork, so `manage.py
# qcluster` ignores the setting (tests/test_database_pool.py).
DATABASE_POOL = (env.bool("DATABASE_POOL", default=False) and IS_POSTGRES
                 and not any(arg == "qcluster" for arg in sys.argv[1:2]))
if DATABASE_POOL:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),  # seconds to wait for a free connection
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them (Django refuses both at once)

# --- Redis: channel layer and cache ---------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env.str("REDIS_PREFIX", default="labmanager")},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("REDIS_PREFIX", default="labmanager"),
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- live events (SSE /api/events/stream, WebSocket /ws/events; docs/events.md) --------------------
LIVE_KEEPALIVE_SECONDS = env.float("LIVE_KEEPALIVE_SECONDS", default=15.0)  # SSE comment when idle
LIVE_TAIL_INTERVAL = env.float("LIVE_TAIL_INTERVAL", default=0.5)  # journal poll per ASGI process, seconds
LIVE_QUEUE_MAX = env.int("LIVE_QUEUE_MAX", default=10_000)  # events queued for one slow client before cutting it
# /ws/events without a credential at the handshake: seconds for its first message, {"type": "auth", ...}.
EVENTS_WS_AUTH_TIMEOUT = env.float("EVENTS_WS_AUTH_TIMEOUT", default=10.0)
# Accept the old `?token=` / `?api_key=` of /ws/events (URLs end up in proxies' logs): off, such a socket is closed.
EVENTS_WS_QUERY_TOKEN = env.bool("EVENTS_WS_QUERY_TOKEN", default=False)

# --- audit journal (docs/audit.md) ----------------------------------------------
# Events up to this sequence number may be plain SHA-256 (sealed before the chain was keyed: an upgrade).
AUDIT_CHAIN_PLAIN_UNTIL = env.int("AUDIT_CHAIN_PLAIN_UNTIL", default=0)
# Events up to this sequence number may be sealed with a key derived from SECRET_KEY or SECRET_KEY_FALLBACKS
# that no longer seals (before AUDIT_CHAIN_KEY was set, or before SECRET_KEY was rotated). 0: none.
AUDIT_CHAIN_DERIVED_UNTIL = env.int("AUDIT_CHAIN_DERIVED_UNTIL", default=0)
# Anchors of the chain's head outside the database (off unless one is set): a directory, an S3 bucket.
AUDIT_ANCHOR_DIR = env.str("AUDIT_ANCHOR_DIR", default="")
AUDIT_ANCHOR_BUCKET = env.str("AUDIT_ANCHOR_BUCKET", default="")
AUDIT_ANCHOR_PREFIX = env.str("AUDIT_ANCHOR_PREFIX", default="audit-anchors/")
AUDIT_ANCHOR_RETENTION_DAYS = env.int("AUDIT_ANCHOR_RETENTION_DAYS", default=365)  # Object Lock, no bucket rule
AUDIT_ANCHOR_INTERVAL_MINUTES = env.int("AUDIT_ANCHOR_INTERVAL_MINUTES", default=60)

# --- background jobs (django-q2) ------------------------------------------
Q_CLUSTER = {
    "name": "labmanager",
    "orm": "default",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": 120,
    "retry": 180,
    "catch_up": False,
    "label": "Background jobs",
}
# Declared here, reconciled by `manage.py setup_schedules` (create/update/delete by name).
Q_SCHEDULES = {
    "purge_idempotency_keys": {"func": "apps.api.tasks.purge_idempotency_keys", "schedule_type": "H"},
    "ec2_sync": {"func": "apps.workers.tasks.ec2_sync", "schedule_type": "I", "minutes": 1},
    "cml_health": {"func": "apps.workers.tasks.cml_health", "schedule_type": "I", "minutes": 1},
    "lifecycle_tick": {"func": "apps.lablets.tasks.lifecycle_tick", "schedule_type": "I", "minutes": 1},
    "worker_cost": {"func": "apps.fleet.tasks.worker_cost_tick", "schedule_type": "I", "minutes": 1},
    "fleet_reconcile": {"func": "apps.fleet.tasks.reconcile", "schedule_type": "I", "minutes": 1},
    "reap_sessions": {"func": "apps.sessions.tasks.reap_sessions", "schedule_type": "I", "minutes": 1},
    # Does nothing unless FLEET_PLANNER_ENABLED and a worker template is scalable.
    "fleet_plan": {"func": "apps.fleet.tasks.fleet_plan_tick", "schedule_type": "I", "minutes": 1},
    "webhooks_catch_up": {"func": "apps.webhooks.tasks.webhooks_catch_up", "schedule_type": "I", "minutes": 1},
    # Does nothing unless AUDIT_ANCHOR_DIR or AUDIT_ANCHOR_BUCKET is set.
    "audit_anchor": {"func": "apps.audit.tasks.audit_anchor_tick", "schedule_type": "I",
                     "minutes": AUDIT_ANCHOR_INTERVAL_MINUTES},
    # The provider's users against Keycloak's admin API (off without OIDC_ADMIN_CLIENT_ID/SECRET).
    "identity_provider_sync": {"func": "apps.identity.tasks.provider_users_sync", "schedule_type": "I", "minutes": 15},
}

# --- scheduler and lifecycle (docs/scheduler.md) ------------------------------
SCHEDULER_POLICY = env.str("SCHEDULER_POLICY", default="best_fit")  # best_fit | spread
# A waiting PENDING instance gains one priority point per this many minutes (aging), capped at 10.
SCHEDULER_AGING_MINUTES = env.int("SCHEDULER_AGING_MINUTES", default=30)
# Book stopped (startable) workers when no running one has room; they are started ahead of the slot.
SCHEDULER_USE_STOPPED_WORKERS = env.bool("SCHEDULER_USE_STOPPED_WORKERS", default=True)
# A worker whose CML licence tier is `personal` hosts at most this many live instances at once.
PERSONAL_LICENSE_MAX_LIVE_INSTANCES = env.int("PERSONAL_LICENSE_MAX_LIVE_INSTANCES", default=1)
# Console ports handed out per worker to running labs, inclusive range.
CONSOLE_PORT_MIN = env.int("CONSOLE_PORT_MIN", default=9000)
CONSOLE_PORT_MAX = env.int("CONSOLE_PORT_MAX", default=9999)
# The host students reach console ports at (CML PATty on the worker) when a worker names none of its own
# (Worker.console_host); blank: the worker's public address. `make run` and the tests: the CML simulator's 127.0.0.1.
CONSOLE_HOST = env.str("CONSOLE_HOST", default="")
# Direct console access (docs/workers.md#direct-console-access): a student's range may be /0 (everyone) only when on.
DIRECT_CONSOLE_ALLOW_ANY_ADDRESS = env.bool("DIRECT_CONSOLE_ALLOW_ANY_ADDRESS", default=False)
# Browser consoles (docs/consoles.md): closed after this many seconds without a keystroke; at most this many
# open per instance and per ASGI process (a further one is refused with close code 4429 / 4503).
CONSOLE_IDLE_SECONDS = env.float("CONSOLE_IDLE_SECONDS", default=900)
CONSOLE_MAX_PER_INSTANCE = env.int("CONSOLE_MAX_PER_INSTANCE", default=8)
CONSOLE_MAX_PER_PROCESS = env.int("CONSOLE_MAX_PER_PROCESS", default=500)
BULK_MAX_OWNERS = env.int("BULK_MAX_OWNERS", default=500)
# Student links (docs/api.md#student-links): default expiry = the timeslot end + this grace; the page's
# requests per client address; `student_link.used` journalled at most once per link per this many minutes;
# a student's extend request adds this many minutes (within the definition's max duration).
STUDENT_LINK_GRACE_MINUTES = env.int("STUDENT_LINK_GRACE_MINUTES", default=30)
STUDENT_LINK_RATE_LIMIT = env.str("STUDENT_LINK_RATE_LIMIT", default="300/min")
STUDENT_LINK_USE_JOURNAL_MINUTES = env.int("STUDENT_LINK_USE_JOURNAL_MINUTES", default=15)
STUDENT_LINK_EXTEND_MINUTES = env.int("STUDENT_LINK_EXTEND_MINUTES", default=30)
# Quotas; 0 means no limit.
QUOTA_INSTRUCTOR_MAX_LIVE = env.int("QUOTA_INSTRUCTOR_MAX_LIVE", default=0)
QUOTA_INSTRUCTOR_MAX_MINUTES_PER_DAY = env.int("QUOTA_INSTRUCTOR_MAX_MINUTES_PER_DAY", default=0)
QUOTA_OWNER_MAX_LIVE = env.int("QUOTA_OWNER_MAX_LIVE", default=0)
QUOTA_OWNER_MAX_MINUTES_PER_DAY = env.int("QUOTA_OWNER_MAX_MINUTES_PER_DAY", default=0)
# The lifecycle engine (apps.lablets.engine, run by the lifecycle_tick schedule).
LIFECYCLE_LEAD_MINUTES = env.int("LIFECYCLE_LEAD_MINUTES", default=10)  # bring labs up this early
LIFECYCLE_EXPIRE_AFTER_MINUTES = env.int("LIFECYCLE_EXPIRE_AFTER_MINUTES", default=15)  # not RUNNING by start+this
LIFECYCLE_EXPIRING_WARNING_MINUTES = env.int("LIFECYCLE_EXPIRING_WARNING_MINUTES", default=10)
LIFECYCLE_MAX_ATTEMPTS = env.int("LIFECYCLE_MAX_ATTEMPTS", default=3)
LIFECYCLE_RETRY_BASE_SECONDS = env.int("LIFECYCLE_RETRY_BASE_SECONDS", default=30)  # doubles per attempt
# A claimed instance is another tick's to take over after this long (a q cluster died mid-step).
LIFECYCLE_STEP_LEASE_SECONDS = env.float("LIFECYCLE_STEP_LEASE_SECONDS", default=180.0)
LIFECYCLE_CML_TIMEOUT_SECONDS = env.float("LIFECYCLE_CML_TIMEOUT_SECONDS", default=30.0)  # per CML request of a step
LIFECYCLE_TICK_BATCH = env.int("LIFECYCLE_TICK_BATCH", default=200)  # instances per kind of work per tick
LIFECYCLE_TICK_BUDGET_SECONDS = env.float("LIFECYCLE_TICK_BUDGET_SECONDS", default=50.0)  # then no new network step
# Warm pools (docs/workers.md#warm-pools): a pool shrinks to zero when no instance of its definition started for
# this long; a warm lab older than this is recycled (deleted from CML, replaced).
WARM_POOL_IDLE_HOURS = env.float("WARM_POOL_IDLE_HOURS", default=24.0)
WARM_LAB_MAX_AGE_MINUTES = env.int("WARM_LAB_MAX_AGE_MINUTES", default=360)
# Instance archives (lab YAML and artifacts) go to S3 (moto's S3 under `make run` and in tests).
ARCHIVE_S3_BUCKET = env.str("ARCHIVE_S3_BUCKET", default="labmanager-archive")
ARCHIVE_S3_PREFIX = env.str("ARCHIVE_S3_PREFIX", default="instances/")
# Cost: running workers that host nothing for this long are stopped (0: never).
WORKER_IDLE_STOP_MINUTES = env.int("WORKER_IDLE_STOP_MINUTES", default=30)
# Cost: how long a stopped worker takes to boot and bring CML up; it is started this long (plus
# LIFECYCLE_LEAD_MINUTES) before the first slot booked on it.
WORKER_BOOT_MINUTES = env.int("WORKER_BOOT_MINUTES", default=10)
# The fleet's reconciliation (apps.fleet.reconcile, docs/workers.md#reconciliation-with-ec2-and-cml): a lab on a
# worker's CML that nothing in LabManager owns is listed, and deleted this long after it was first seen
# (0: listed only, never deleted).
FLEET_ORPHAN_LAB_GRACE_MINUTES = env.int("FLEET_ORPHAN_LAB_GRACE_MINUTES", default=60)

# --- the elastic fleet's planner (apps.fleet.planner, docs/workers.md#the-planner) ------------------------
# Every minute it launches workers of scalable templates for demand the fleet cannot hold and terminates
# stopped ones nobody needs. It acts only on templates marked scalable: on by default.
FLEET_PLANNER_ENABLED = env.bool("FLEET_PLANNER_ENABLED", default=True)
# Limits over the whole fleet: live workers (every one not terminated or failed) and their cost per day
# (cost_per_hour × 24 of each, from its template). Blank cost: no limit. Templates may set lower ones.
FLEET_MAX_WORKERS = env.int("FLEET_MAX_WORKERS", default=10)
FLEET_MAX_COST_PER_DAY = env.float("FLEET_MAX_COST_PER_DAY", default=None)
# The planner never terminates below this many live workers (templates add their own min_workers).
FLEET_MIN_WORKERS = env.int("FLEET_MIN_WORKERS", default=0)
# A stopped worker of a scalable template with nothing booked for this long is terminated (0: never).
FLEET_TERMINATE_UNNEEDED_HOURS = env.float("FLEET_TERMINATE_UNNEEDED_HOURS", default=24.0)
# How far ahead the planner looks at bookings and reservations.
FLEET_PLAN_HORIZON_HOURS = env.int("FLEET_PLAN_HORIZON_HOURS", default=24)

# --- topologies: what a lab may ask of CML (apps/workers/cml/topology_policy.py, docs/security.md) ----
# Node definitions a topology may use (lablet definitions and remote-lab uploads); external connectors are
# refused whatever this says, unless an admin marked the lablet definition trusted.
TOPOLOGY_ALLOWED_NODE_DEFINITIONS = env.list("TOPOLOGY_ALLOWED_NODE_DEFINITIONS", default=[
    "iosv", "iosvl2", "iol-xe", "ioll2-xe", "csr1000v", "cat8000v", "iosxrv9000", "nxosv9000", "asav", "alpine",
    "ubuntu", "server", "desktop", "unmanaged_switch", "trex", "wan_emulator",
])
# Caps on one topology (0: no limit); a node without cpus/ram counts its node definition's default.
TOPOLOGY_MAX_NODES = env.int("TOPOLOGY_MAX_NODES", default=40)
TOPOLOGY_MAX_CPUS = env.int("TOPOLOGY_MAX_CPUS", default=64)
TOPOLOGY_MAX_MEMORY_MB = env.int("TOPOLOGY_MAX_MEMORY_MB", default=131072)
# The sum of the nodes' data_volume and boot_disk_size (GiB); a node without them counts 0 (its image's disk).
TOPOLOGY_MAX_DISK_GB = env.int("TOPOLOGY_MAX_DISK_GB", default=1024)
# A topology's text (UTF-8 bytes), refused before it is parsed; parsing runs in the request's thread.
TOPOLOGY_MAX_BYTES = env.int("TOPOLOGY_MAX_BYTES", default=1024 * 1024)

# --- remote-lab sessions (docs/remote-lab.md) ---------------------------------
SESSION_DEFAULT_POOL = env.str("SESSION_DEFAULT_POOL", default="default")  # POST /session without ?pool=
SESSION_ACTIVE_STALE_SECONDS = env.int("SESSION_ACTIVE_STALE_SECONDS", default=300)  # reaped after this silence
SESSION_WAITING_STALE_SECONDS = env.int("SESSION_WAITING_STALE_SECONDS", default=600)
SESSION_QUEUE_MAX = env.int("SESSION_QUEUE_MAX", default=1000)  # waiting sessions per pool (0: no bound)
# Reads of the queue reap and promote a pool at most this often (the schedule does it every minute).
SESSION_SWEEP_INTERVAL_SECONDS = env.float("SESSION_SWEEP_INTERVAL_SECONDS", default=5.0)
# Clients without an API key or token are accepted only from these networks (REMOTE_ADDR).
SESSION_ANONYMOUS_NETWORKS = env.list("SESSION_ANONYMOUS_NETWORKS", default=["127.0.0.1/32", "::1/128"])
# Per user (per address when anonymous), a bucket of that many requests: a waiting client polls every 2 s
# and heartbeats every 30 s (~32 requests a minute), so ~35 clients can share one key or address.
# Blank: no limit. The benchmarks set their own (bench/sessions.py).
SESSION_API_RATE_LIMIT = env.str("SESSION_API_RATE_LIMIT", default="1200/min")
SESSION_UPLOAD_MAX_BYTES = env.int("SESSION_UPLOAD_MAX_BYTES", default=10 * 1024 * 1024)  # topology + extra files
SESSION_UPLOAD_MAX_FILES = env.int("SESSION_UPLOAD_MAX_FILES", default=20)  # extra_files per POST /lab
SESSION_STORAGE_DIR = env.str("SESSION_STORAGE_DIR", default=str(VAR_DIR / "sessions"))
SESSION_LAB_START_TIMEOUT_SECONDS = env.int("SESSION_LAB_START_TIMEOUT_SECONDS", default=600)
# A request that awaits a q task (apps.core.awaited) waits this long at most (a q task is stopped after
# Q_CLUSTER["timeout"], 120 s): POST /api/workers/{id}/sync then answers with the worker as it is.
TASK_WAIT_SECONDS = env.int("TASK_WAIT_SECONDS", default=150)
# POST /api/lablet-instances/{id}/terminate and /start-collection await their q task this long at most, then
# answer with the instance as it is (the tick goes on); POST /api/lablet-definitions/{id}/sync answers 502.
LABLET_TASK_WAIT_SECONDS = env.int("LABLET_TASK_WAIT_SECONDS", default=TASK_WAIT_SECONDS)
SESSION_HISTORY_DAYS = env.int("SESSION_HISTORY_DAYS", default=30)  # ended sessions kept this long (0: forever)

# --- AWS EC2 (workers) and CML ---------------------------------------------
# With AWS_ENDPOINT_URL unset boto3 talks to AWS with its usual credential chain; `make run` and the
# tests point it at moto's server on 127.0.0.1 instead.
AWS_ENDPOINT_URL = env.str("AWS_ENDPOINT_URL", default="")
AWS_REGION = env.str("AWS_REGION", default="us-west-2")
EC2_MAX_ATTEMPTS = env.int("EC2_MAX_ATTEMPTS", default=4)
EC2_TIMEOUT_SECONDS = env.float("EC2_TIMEOUT_SECONDS", default=10.0)
WORKER_AMI_ID = env.str("WORKER_AMI_ID", default="")
WORKER_LAUNCH_TEMPLATE_ID = env.str("WORKER_LAUNCH_TEMPLATE_ID", default="")
WORKER_SUBNET_ID = env.str("WORKER_SUBNET_ID", default="")
WORKER_SECURITY_GROUP_IDS = env.list("WORKER_SECURITY_GROUP_IDS", default=[])
WORKER_KEY_NAME = env.str("WORKER_KEY_NAME", default="")
# The CML controller of a worker: its own `cml_url` if set, else this template over its address.
CML_URL_TEMPLATE = env.str("CML_URL_TEMPLATE", default="https://{ip_address}")
CML_URL_OVERRIDE = env.str("CML_URL_OVERRIDE", default="")  # one CML (the simulator) for every worker
CML_USERNAME = env.str("CML_USERNAME", default="admin")
CML_PASSWORD = env.str("CML_PASSWORD", default="")
CML_TIMEOUT_SECONDS = env.float("CML_TIMEOUT_SECONDS", default=5.0)
# TLS to CML (the admin password crosses it): certificates are verified against this PEM bundle, else the
# system's CAs; a worker may opt out in the admin (Worker.cml_tls_verify, journalled). Plain http:// to
# CML is refused unless CML_ALLOW_HTTP (development and tests: the simulator serves http on 127.0.0.1).
CML_CA_BUNDLE = env.str("CML_CA_BUNDLE", default="")
CML_ALLOW_HTTP = env.bool("CML_ALLOW_HTTP", default=False)
CML_HEALTH_CONCURRENCY = env.int("CML_HEALTH_CONCURRENCY", default=100)

# --- webhooks (docs/webhooks.md) -----------------------------------------------
# SSRF guard: loopback, private and link-local targets are refused unless this is true (tests set it);
# metadata, unspecified and multicast addresses are refused even then. Hosts listed in
# WEBHOOK_ALLOWED_HOSTS may be private too (exact host names, e.g. an internal receiver); never metadata.
WEBHOOK_ALLOW_PRIVATE_NETWORKS = env.bool("WEBHOOK_ALLOW_PRIVATE_NETWORKS", default=False)
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)  # per delivery, the first included
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=30)  # doubles per attempt
WEBHOOK_DISABLE_AFTER_FAILURES = env.int("WEBHOOK_DISABLE_AFTER_FAILURES", default=10)  # 0: never
CLOUDEVENTS_SOURCE = env.str("CLOUDEVENTS_SOURCE", default="https://labmanager.local")

# --- metrics (GET /metrics, docs/webhooks.md#metrics) ---------------------------
# Scrapes from these networks need no credentials; others need an admin or operator API key.
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"])

# --- auth -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG

# --- identity: OIDC browser login and bearer JWTs (apps/identity, docs/security-identity.md) ---
# Empty issuer: OIDC is off, the local login at /accounts/login/ is the only one and bearer JWTs get 401.
# Keycloak: https://<host>/realms/<realm>. Endpoints come from the issuer's discovery document unless set.
OIDC_ISSUER = env.str("OIDC_ISSUER", default="").rstrip("/")
OIDC_RP_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="labmanager-dashboard")
OIDC_RP_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_AUTHORIZATION_ENDPOINT", default="")
OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_TOKEN_ENDPOINT", default="")
OIDC_OP_USER_ENDPOINT = env.str("OIDC_USERINFO_ENDPOINT", default="")
OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_JWKS_URI", default="")
OIDC_OP_LOGOUT_ENDPOINT = env.str("OIDC_END_SESSION_ENDPOINT", default="")
OIDC_DISCOVERY_CACHE_SECONDS = env.int("OIDC_DISCOVERY_CACHE_SECONDS", default=3600)
OIDC_RP_SCOPES = env.str("OIDC_SCOPES", default="openid email profile")
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT_SECONDS", default=5.0)
OIDC_VERIFY_SSL = env.bool("OIDC_VERIFY_TLS", default=True)
# Where the provider sends the browser after RP-initiated logout (blank: this site's home page).
OIDC_POST_LOGOUT_REDIRECT_URL = env.str("OIDC_POST_LOGOUT_REDIRECT_URL", default="")
# Provider role, client role or group name -> LabManager role (a Django group); unmapped names are ignored.
OIDC_ROLE_MAP = env.dict("OIDC_ROLE_MAP", default={"admin": "admin", "operator": "operator", "instructor": "instructor"})
OIDC_ROLE_CLIENTS = env.list("OIDC_ROLE_CLIENTS", default=[])  # resource_access.<client>.roles read; blank: the client id
# Bearer JWTs: accepted when `aud` or `azp` is one of these (blank: the client id); RS256/ES256 only.
OIDC_JWT_AUDIENCES = env.list("OIDC_JWT_AUDIENCES", default=[])
OIDC_JWT_ALGORITHMS = env.list("OIDC_JWT_ALGORITHMS", default=["RS256", "ES256"])
OIDC_JWT_LEEWAY_SECONDS = env.int("OIDC_JWT_LEEWAY_SECONDS", default=30)
OIDC_JWKS_CACHE_SECONDS = env.int("OIDC_JWKS_CACHE_SECONDS", default=3600)
OIDC_JWKS_REFETCH_INTERVAL_SECONDS = env.float("OIDC_JWKS_REFETCH_INTERVAL_SECONDS", default=30.0)  # on an unknown kid
# A browser session of a provider user is re-checked with the provider (refresh-token grant + userinfo) once
# this much time has passed since its sign-in or last check: roles follow, a user gone or without a role is
# logged out (apps/identity/recheck.py).
OIDC_ROLE_RECHECK_SECONDS = env.int("OIDC_ROLE_RECHECK_SECONDS", default=900)
# The scheduled provider sync (identity_provider_sync, every 15 minutes) reads Keycloak's admin API with this
# service-account client (realm-management roles view-users and view-clients); blank: the sync is off.
OIDC_ADMIN_CLIENT_ID = env.str("OIDC_ADMIN_CLIENT_ID", default="")
OIDC_ADMIN_CLIENT_SECRET = env.str("OIDC_ADMIN_CLIENT_SECRET", default="")
# Accounts the provider made before accounts were linked by (issuer, subject) (migration identity.0003): a
# sign-in with the username links one only within this many days of the migration (0: only the provider sync
# links them, by exact username at Keycloak's admin API). docs/security-identity.md#accounts.
OIDC_PENDING_LINK_DAYS = env.int("OIDC_PENDING_LINK_DAYS", default=30)
# mozilla-django-oidc: authorization code flow with PKCE (S256), state and nonce; the ID token is kept in
# the session for RP-initiated logout (id_token_hint).
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_USE_PKCE = True
OIDC_PKCE_CODE_CHALLENGE_METHOD = "S256"
OIDC_USE_NONCE = True
OIDC_STORE_ID_TOKEN = True
OIDC_AUTHENTICATION_CALLBACK_URL = "identity:callback"
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso_failed=1"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "apps.identity.oidc.OidcBackend",  # acts only on the OIDC callback
]

# --- i18n / static ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles"))  # made by collectstatic
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- REST API ---------------------------------------------------------------
# Rate limits (docs/security.md#rate-limits): token buckets in the cache, shared across processes with Redis.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="1000/min")  # per authenticated user: the refill rate
API_RATE_BURST = env.int("API_RATE_BURST", default=100)  # per authenticated user: the bucket size
API_ANON_RATE_LIMIT = env.str("API_ANON_RATE_LIMIT", default="5/min")  # per address, unauthenticated requests
LOGIN_RATE_LIMIT = env.str("LOGIN_RATE_LIMIT", default="5/min")  # per address, sign-in attempts
API_MAX_PAGE_SIZE = 1000
IDEMPOTENCY_TTL_HOURS = env.int("IDEMPOTENCY_TTL_HOURS", default=24)
IDEMPOTENCY_WAIT_SECONDS = env.float("IDEMPOTENCY_WAIT_SECONDS", default=30.0)

# Cross-origin use of the API from browsers (django-cors-headers; docs/api.md#cross-origin-use-cors): pages of
# these origins (comma-separated, `https://lms.example.org`; default none) may call /api with a key or token
# in a header. Never cookies: credentials are not allowed across origins, so a session is never used.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = (*corsheaders_default_headers, "idempotency-key", "x-api-key")
CORS_EXPOSE_HEADERS = [
    "X-Total-Count", "Link", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After",
    "X-Trace-Id", "Idempotent-Replayed",
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.identity.authentication.ApiKeyAuthentication",
        "apps.identity.bearer.BearerJwtAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.api.permissions.RolePermission"],  # a view without a policy: refused
    "DEFAULT_THROTTLE_CLASSES": ["apps.api.throttling.ApiRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "apps.api.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LabManager API",
    "DESCRIPTION": (
        "Control plane for instructor-led network labs on Cisco Modeling Labs workers. "
        "Errors are RFC 7807 problem+json with a trace_id."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["apps.api.permissions.Public"],
    # The documents are public: a signed-in browser is counted as its user, API keys are not read there.
    "SERVE_AUTHENTICATION": ["rest_framework.authentication.SessionAuthentication"],
    "SCHEMA_PATH_PREFIX": r"/api",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The SSE stream is a plain async view: this hook puts it in the document (apps/events/schema.py).
    # apps.api.schema.complete_operations comes last: it declares what the plumbing adds to every operation.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "apps.events.schema.add_event_stream",
                             "apps.identity.schema.add_sign_in_endpoints", "apps.api.schema.complete_operations"],
    "ENUM_NAME_OVERRIDES": {
        "WorkerStatusEnum": "apps.workers.models.WorkerStatus",
        "InstanceStatusEnum": "apps.lablets.models.InstanceStatus",
    },
}

# --- logging ----------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"trace_id": {"()": "apps.core.middleware.TraceIdLogFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["trace_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "daphne": {"level": "WARNING"},
        "werkzeug": {"level": "WARNING"},  # moto and the simulators' request lines
        "botocore": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},  # one line per CML request otherwise
    },
}
