import pytest


@pytest.fixture(autouse=True)
def _tasks_run_inline(monkeypatch):
    """django-q2 runs what POST /api/workers/{id}/sync enqueues in this process, at once (Q_CLUSTER sync is
    read at import: patch Conf); the request then finds the task's row at its first look."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
