"""The writes to workers: views, admin actions, jobs and commands call these. One field is written
elsewhere: a worker's session pool (Worker.session_pool), by apps.sessions.services.pools."""

from apps.workers.services.cml import (  # noqa: F401
    cml_credentials,
    worker_cml_health,
    worker_cml_health_all,
    worker_cml_health_begin,
    worker_cml_health_finish,
    worker_license_deregister,
    worker_license_register,
)
from apps.workers.services.fleet import (  # noqa: F401
    CAPACITY_FIELDS,
    CONNECTION_FIELDS,
    KNOWN_INSTANCE_TYPES,
    worker_apply_ec2_state,
    worker_create,
    worker_drain,
    worker_start,
    worker_stop,
    worker_terminate,
    worker_transition,
    worker_undrain,
    worker_update_capacity,
    worker_update_connection,
)
from apps.workers.services.sync import worker_ec2_sync, worker_ec2_sync_begin  # noqa: F401
from apps.workers.services.templates import (  # noqa: F401
    worker_template_create,
    worker_template_record_boot,
    worker_template_update,
)
