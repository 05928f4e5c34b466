"""A list page is built from `.values()` rows; each row must represent exactly as DRF represents the instance."""

from datetime import timedelta

import pytest

from apps.lablets.api.serializers import LabletInstanceSerializer
from apps.lablets.models import LabletInstance
from apps.lablets.selectors import lablet_instance_rows
from apps.lablets.services import lablet_instance_extend
from tests.factories import WorkerFactory, instance_in

pytestmark = pytest.mark.django_db


def _both(instance):
    row = lablet_instance_rows(LabletInstance.objects.filter(pk=instance.pk)).get()
    return LabletInstanceSerializer.represent_row(row), LabletInstanceSerializer(LabletInstance.objects.get(pk=instance.pk)).data


@pytest.mark.parametrize("state", ["pending", "running", "grading", "archived", "terminated"])
def test_a_row_represents_like_the_instance(state, instructor_user):
    kwargs = {"created_by": instructor_user, "reservation_id": "res-1", "priority": 7}
    if state != "pending":
        kwargs["worker"] = WorkerFactory()
    fast, drf = _both(instance_in(state, **kwargs))
    assert fast == drf
    assert (fast["worker_id"] is None) == (state == "pending")  # placed on a worker unless pending


def test_a_row_without_worker_or_creator_and_with_results_represents_like_the_instance():
    instance = instance_in("collecting")
    lablet_instance_extend(instance=instance, actor="tests", minutes=5)
    LabletInstance.objects.filter(pk=instance.pk).update(
        artifacts=[{"name": "r1.cfg", "size": 120}],
        grading_result={"score": 9, "max": 10},
        timeslot_end=instance.timeslot_end + timedelta(minutes=1, microseconds=1),
    )
    fast, drf = _both(instance)
    assert fast == drf
    assert fast["created_by"] is None and fast["worker_id"] is None
    assert fast["grading_result"] == {"score": 9, "max": 10}


def test_timestamps_written_by_the_database_match_drf_with_and_without_a_fraction():
    """The row's timestamps are text from SQL (apps.core.sqltime.IsoDateTime): whole seconds have no
    fraction, as datetime.isoformat() writes them; others have six digits; all in UTC with `Z`."""
    instance = instance_in("running", worker=WorkerFactory())
    whole = instance.timeslot_start.replace(microsecond=0)
    LabletInstance.objects.filter(pk=instance.pk).update(
        timeslot_start=whole, timeslot_end=whole + timedelta(hours=1, microseconds=250))

    fast, drf = _both(instance)

    assert fast == drf
    assert "." not in fast["timeslot_start"] and fast["timeslot_start"].endswith("Z")
    assert fast["timeslot_end"].endswith(".000250Z")
