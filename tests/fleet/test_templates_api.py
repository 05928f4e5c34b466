"""Scalable worker templates on /api/worker-templates: the planner's fields in and out, journalled."""

import pytest

from apps.audit.models import AuditEvent
from apps.workers.models import WorkerTemplate

pytestmark = pytest.mark.django_db

BODY = {"name": "elastic", "instance_type": "m5.2xlarge", "ami_id": "ami-12c6146b", "cpu_cores": 8, "memory_gb": 32,
        "storage_gb": 150, "max_nodes": 15, "cost_per_hour": "0.9"}


def test_an_operator_marks_a_template_scalable_with_zones_fallbacks_and_limits(operator_client):
    response = operator_client.post("/api/worker-templates", {
        **BODY, "scalable": True, "availability_zones": ["us-west-2a", "us-west-2b"],
        "fallback_instance_types": ["m5.4xlarge"], "min_workers": 1, "max_workers": 4, "max_cost_per_day": "80.00",
    }, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["scalable"] is True and body["availability_zones"] == ["us-west-2a", "us-west-2b"]
    assert (body["fallback_instance_types"], body["subnet_ids"]) == (["m5.4xlarge"], [])
    assert (body["min_workers"], body["max_workers"], body["max_cost_per_day"]) == (1, 4, "80.00")
    assert body["boot_seconds"] is None, "measured, never sent"
    template = WorkerTemplate.objects.get(public_id=body["id"])
    assert template.instance_types == ["m5.2xlarge", "m5.4xlarge"]

    response = operator_client.put(f"/api/worker-templates/{body['id']}", {"scalable": False, "max_workers": None,
                                                                             "boot_seconds": 5}, format="json")
    assert response.status_code == 200
    assert (response.json()["scalable"], response.json()["max_workers"], response.json()["boot_seconds"]) == (
        False, None, None)
    changed = AuditEvent.objects.filter(event_type="worker_template.updated").latest("id")
    assert (changed.metadata["before"]["scalable"], changed.metadata["after"]["scalable"]) == ("True", "False")


def test_a_template_is_not_scalable_unless_asked(operator_client):
    body = operator_client.post("/api/worker-templates", BODY, format="json").json()
    assert (body["scalable"], body["min_workers"], body["max_workers"], body["availability_zones"]) == (
        False, 0, None, [])


def test_zones_must_be_a_list_of_names(operator_client):
    response = operator_client.post("/api/worker-templates", {**BODY, "availability_zones": "us-west-2a,b"},
                                    format="json")
    assert response.status_code in (400, 422)
    assert "availability_zones" in response.content.decode()
