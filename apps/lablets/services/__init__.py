"""The writes to lablet definitions and instances. The lifecycle engine (apps/lablets/engine/) still writes
a few instance fields itself, a step's results among them (listed in docs/lifecycle.md, "The engine and the
services")."""

from apps.lablets.services.definitions import (  # noqa: F401
    lablet_definition_create,
    lablet_definition_delete,
    lablet_definition_sync,
    lablet_definition_update,
)
from apps.lablets.services.instances import (  # noqa: F401
    lablet_instance_create,
    lablet_instance_extend,
    lablet_instance_start_collection,
    lablet_instance_start_grading,
    lablet_instance_terminate,
    lablet_instance_transition,
)
