"""manage.py verify_audit: a summary, and the exit status says whether the chain is intact."""

import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from tests.audit.conftest import TABLE, record, sql

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def test_it_reports_a_sound_chain_and_exits_zero(chain):
    out, err = StringIO(), StringIO()

    call_command("verify_audit", stdout=out, stderr=err)

    assert "Audit chain valid: 10 events" in out.getvalue()
    assert chain[-1].event_hash in out.getvalue()
    verified = AuditEvent.objects.get(event_type="audit.verified")
    assert verified.success and verified.actor == "system"
    assert verified.metadata["total_events"] == 10


def test_it_fails_with_the_first_tampered_event(chain):
    sql(f"UPDATE {TABLE} SET resource_id = 'other' WHERE sequence_num = 6")

    with pytest.raises(CommandError) as failure:
        call_command("verify_audit", "--no-record", stdout=StringIO())

    assert failure.value.returncode == 1
    assert "BROKEN at event 6" in str(failure.value)
    assert not AuditEvent.objects.filter(event_type="audit.verified").exists()


def test_it_seals_what_is_committed_before_verifying(db):
    record(3)  # never sealed: this test's transaction does not commit
    assert AuditEvent.objects.filter(sequence_num__isnull=True).count() == 3
    out = StringIO()

    call_command("verify_audit", "--no-record", stdout=out)

    assert "valid: 3 events" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_the_exit_status_from_a_shell(tmp_path):
    # A real process, against the test database: 0 when sound, 1 once a row is edited.
    record(5)
    env = {"DJANGO_SETTINGS_MODULE": "labmanager.settings", "PATH": "/usr/bin:/bin",
           "SQLITE_PATH": str(settings.DATABASES["default"]["NAME"]), "LOG_LEVEL": "WARNING"}
    if settings.IS_POSTGRES:
        db = settings.DATABASES["default"]
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    command = [sys.executable, "manage.py", "verify_audit", "--no-record"]

    sound = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    sql(f"UPDATE {TABLE} SET actor = 'mallory' WHERE sequence_num = 2")
    broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)

    assert sound.returncode == 0, sound.stderr
    assert "valid: 5 events" in sound.stdout
    assert broken.returncode == 1
    assert "BROKEN at event 2" in broken.stderr
