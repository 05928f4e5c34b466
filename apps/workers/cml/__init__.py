"""The one gateway to CML controllers, over the official virl2-client. No ORM.

Every function takes the controller's `url`, `username` and `password` as keywords
(never logged, never in error messages), and `tls_verify` (default True: the certificate
is checked against settings.CML_CA_BUNDLE or the system's CAs; plain http is refused
unless settings.CML_ALLOW_HTTP), opens its own session, and returns plain
data. Every failure is a `CmlError` whose `kind` is unreachable / auth / refused /
not_found / timeout / incompatible.
"""

from .errors import CmlError
from .labs import (
    CmlNode,
    CmlNodeState,
    cml_convergence_timeout,
    cml_lab_converged,
    cml_lab_delete,
    cml_lab_export_yaml,
    cml_lab_ids_by_title,
    cml_lab_import,
    cml_lab_node_configs,
    cml_lab_node_states,
    cml_lab_nodes,
    cml_lab_start,
    cml_lab_state,
    cml_lab_stop,
    cml_lab_titles,
    cml_lab_wipe,
)
from .system import (
    CmlSystemStatus,
    cml_license_deregister,
    cml_license_register,
    cml_system_status,
    license_status_from,
)

__all__ = [
    "CmlError",
    "CmlNode",
    "CmlNodeState",
    "CmlSystemStatus",
    "cml_convergence_timeout",
    "cml_lab_converged",
    "cml_lab_delete",
    "cml_lab_export_yaml",
    "cml_lab_ids_by_title",
    "cml_lab_import",
    "cml_lab_node_configs",
    "cml_lab_node_states",
    "cml_lab_nodes",
    "cml_lab_start",
    "cml_lab_state",
    "cml_lab_stop",
    "cml_lab_titles",
    "cml_lab_wipe",
    "cml_license_deregister",
    "cml_license_register",
    "cml_system_status",
    "license_status_from",
]
