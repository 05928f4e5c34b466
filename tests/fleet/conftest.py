import pytest


@pytest.fixture(autouse=True)
def _tasks_run_inline(monkeypatch):
    """django-q2 runs what a terminate enqueues in this process, at once (as in tests/lablets/conftest.py)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
