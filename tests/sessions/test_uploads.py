"""POST /lab uploads: extra_files are stored beside the topology in the session's directory under
SESSION_STORAGE_DIR with sanitised names, nothing is ever written anywhere else, the size and count limits
answer 413/422 problem+json, and staging and session directories (and Django's own temporary upload
files) are removed after errors, on release, when the session ends, and when it is reaped.

Names pass two guards: Django's multipart parser keeps only the last path component of a file name
(and drops a part whose name is empty, "." or ".."), then services/storage.py accepts only a plain name
(letters, digits, "_", then also ".", "-", spaces) and refuses the rest with 422. The bodies are built
by hand here: Django's test client would strip the directories from a file name before sending it."""

import os
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.sessions.models import Session
from apps.sessions.services import storage
from apps.sessions.tasks import reap_sessions
from apps.core.errors import PayloadTooLarge, ValidationFailed
from tests.factories import placeable_worker
from tests.sessions.conftest import BASE, OTHER_TOPOLOGY, TOPOLOGY, acquire, assert_problem, create, lab_call, nothing_stored

pytestmark = pytest.mark.django_db
BOUNDARY = "----labmanager-test-boundary"


def _body(parts) -> bytes:
    """multipart/form-data from (field, filename or None, content) triples, file names sent verbatim."""
    out = b""
    for field, filename, content in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def _post_lab(client, session_id, extras=(), *, topology=("two-routers.yaml", TOPOLOGY)):
    parts = [("topology", topology[0], topology[1])] if topology else []
    parts += [("extra_files", name, content) for name, content in extras]
    return client.generic("POST", f"{BASE}/lab", _body(parts), content_type=f"multipart/form-data; boundary={BOUNDARY}",
                          HTTP_X_SESSION_ID=str(session_id))


def _tree(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


def _stored(storage_dir: Path, session_id) -> dict[str, bytes]:
    directory = storage_dir / str(session_id)
    return {path.name: path.read_bytes() for path in directory.iterdir()} if directory.is_dir() else {}


def _nothing_staged(storage_dir: Path) -> bool:
    return not storage_dir.exists() or not any(p.name.startswith(storage.STAGING_PREFIX) for p in storage_dir.iterdir())


@pytest.fixture
def active(anon, worker):
    return create(anon)["session_id"]


@pytest.fixture
def scan(tmp_path, storage_dir):
    """Asserts, at the end of the test, that nothing new appeared under tmp_path outside the storage root
    (the storage root sits in tmp_path, so a traversal out of it would land in the scanned tree)."""
    before = _tree(tmp_path)
    yield
    outside = {p for p in _tree(tmp_path) - before if storage_dir not in p.parents and p != storage_dir}
    assert outside == set()


# --- stored beside the topology ----------------------------------------------------------------------

def test_extra_files_are_stored_beside_the_topology_in_the_sessions_directory(anon, active, storage_dir, scan):
    response = _post_lab(anon, active, [("vars.yml", b"a: 1\n"), ("r1 config.txt", b"hostname r1\n")])

    assert response.status_code == 200, response.content
    assert _stored(storage_dir, active) == {
        "two-routers.yaml": TOPOLOGY, "vars.yml": b"a: 1\n", "r1 config.txt": b"hostname r1\n"}
    assert _nothing_staged(storage_dir)


@pytest.mark.parametrize("sent,stored", [
    ("../../etc/passwd", "passwd"),
    ("a/../../b", "b"),
    ("/etc/x", "x"),
    ("..\\..\\evil.txt", "evil.txt"),
    ("C:\\Windows\\win.ini", "win.ini"),
    ("&#46;&#46;&#47;&#46;&#46;&#47;escaped.txt", "escaped.txt"),  # HTML-escaped "../../"
])
def test_directories_in_a_file_name_are_dropped_and_the_file_stays_in_the_session_directory(
        anon, active, storage_dir, scan, sent, stored):
    response = _post_lab(anon, active, [(sent, b"payload")])

    assert response.status_code == 200, response.content
    assert _stored(storage_dir, active) == {"two-routers.yaml": TOPOLOGY, stored: b"payload"}
    assert not Path("/etc/x").exists()


def test_directories_in_the_topology_name_are_dropped_too(anon, active, storage_dir, scan):
    response = _post_lab(anon, active, topology=("../../../up.yaml", TOPOLOGY))

    assert response.status_code == 200, response.content
    assert _stored(storage_dir, active) == {"up.yaml": TOPOLOGY}


@pytest.mark.parametrize("sent", ["", ".", "..", "a/..", "a\\.."])
def test_an_extra_part_without_a_usable_name_is_not_stored_at_all(anon, active, storage_dir, scan, sent):
    # Django's parser drops such a part before the view sees it: nothing of it is written anywhere.
    response = _post_lab(anon, active, [(sent, b"nameless"), ("kept.txt", b"kept")])

    assert response.status_code == 200, response.content
    assert _stored(storage_dir, active) == {"two-routers.yaml": TOPOLOGY, "kept.txt": b"kept"}


@pytest.mark.parametrize("sent", ["...", ".hidden", "..secret", "-rf", "C:evil.txt", "a|b.txt", "x" * 201])
def test_a_name_that_is_not_a_plain_file_name_is_422_and_nothing_is_written(anon, active, storage_dir, scan, cml, sent):
    body = assert_problem(_post_lab(anon, active, [(sent, b"x")]), 422)

    assert "extra_files" in body["errors"]
    assert _stored(storage_dir, active) == {} and _nothing_staged(storage_dir)
    assert cml.calls["POST import"] == 0


@pytest.mark.parametrize("names", [
    ["vars.yml", "vars.yml"],
    ["vars.yml", "VARS.YML"],  # one file on a case-insensitive disk
    ["TWO-ROUTERS.yaml"],  # the topology's own name
    ["a/vars.yml", "b/vars.yml"],  # the same name once the directories are dropped
])
def test_duplicate_names_are_422(anon, active, storage_dir, scan, names):
    body = assert_problem(_post_lab(anon, active, [(name, b"x") for name in names]), 422)

    assert "Duplicate file name" in body["errors"]["extra_files"][0]
    assert _nothing_staged(storage_dir) and _stored(storage_dir, active) == {}


# --- the storage service's own check (what a caller that bypasses Django's parser would hit) ----------

class _Upload:
    """The three things upload_stage reads of an uploaded file. Not a mock of a boundary: Django's
    UploadedFile cannot even carry these names (it keeps only the base name), which is the point."""

    def __init__(self, name, content: bytes, size=None):
        self.name, self.content = name, content
        self.size = len(content) if size is None else size

    def chunks(self):
        for start in range(0, len(self.content), 64):
            yield self.content[start:start + 64]


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/../../b", "/etc/x", "a\\b", "..\\x", "", ".", "..",
                                  "x\x00y.txt", None])
def test_the_storage_service_refuses_unsafe_names_and_writes_nothing(storage_dir, scan, name):
    with pytest.raises(ValidationFailed) as refused:
        storage.upload_stage(topology=_Upload("t.yaml", TOPOLOGY), extra_files=[_Upload(name, b"x")])

    assert refused.value.status_code == 422
    assert nothing_stored(storage_dir)


def test_the_storage_service_counts_the_bytes_that_arrive_not_the_declared_size(settings, storage_dir, scan):
    settings.SESSION_UPLOAD_MAX_BYTES = len(TOPOLOGY) + 100
    liar = _Upload("big.bin", b"y" * 1000, size=1)

    with pytest.raises(PayloadTooLarge):
        storage.upload_stage(topology=_Upload("t.yaml", TOPOLOGY), extra_files=[liar])

    assert list(storage_dir.iterdir()) == []  # the staging directory it had begun is gone


# --- limits --------------------------------------------------------------------------------------------

def test_files_over_the_byte_limit_are_413(anon, active, storage_dir, settings, scan, cml):
    settings.SESSION_UPLOAD_MAX_BYTES = len(TOPOLOGY) + 100

    assert_problem(_post_lab(anon, active, [("big.bin", b"z" * 101)]), 413)

    assert _nothing_staged(storage_dir) and _stored(storage_dir, active) == {}
    assert cml.calls["POST import"] == 0


def test_files_exactly_at_the_byte_limit_are_accepted(anon, active, storage_dir, settings):
    settings.SESSION_UPLOAD_MAX_BYTES = len(TOPOLOGY) + 100

    assert _post_lab(anon, active, [("fits.bin", b"z" * 100)]).status_code == 200
    assert _stored(storage_dir, active)["fits.bin"] == b"z" * 100


def test_a_body_far_over_the_limit_is_413_before_it_is_parsed(anon, active, storage_dir, settings, tmp_path):
    settings.SESSION_UPLOAD_MAX_BYTES = 1000
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "django-uploads")
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # any parsed file would be spooled to a temporary file there
    (tmp_path / "django-uploads").mkdir()

    body = assert_problem(_post_lab(anon, active, [("huge.bin", b"h" * (storage.MULTIPART_OVERHEAD + 2000))]), 413)

    assert "at most 1000 bytes" in body["detail"]
    assert list((tmp_path / "django-uploads").iterdir()) == []
    assert nothing_stored(storage_dir)


def test_more_extra_files_than_the_limit_are_422(anon, active, storage_dir, settings, cml):
    settings.SESSION_UPLOAD_MAX_FILES = 2

    body = assert_problem(_post_lab(anon, active, [(f"f{n}.txt", b"x") for n in range(3)]), 422)

    assert body["errors"]["extra_files"] == ["Too many files."]
    assert _nothing_staged(storage_dir) and cml.calls["POST import"] == 0
    assert _post_lab(anon, active, [(f"f{n}.txt", b"x") for n in range(2)]).status_code == 200


# --- cleanup -----------------------------------------------------------------------------------------

def test_djangos_temporary_upload_files_are_removed_after_success_and_after_errors(anon, active, settings, tmp_path):
    spool = tmp_path / "django-uploads"
    spool.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every file goes through a temporary file

    assert _post_lab(anon, active, [("vars.yml", b"a: 1\n")]).status_code == 200
    assert_problem(_post_lab(anon, active, [(".bad", b"x")]), 422)
    assert_problem(_post_lab(anon, active, [("d.txt", b"x"), ("d.txt", b"y")]), 422)

    assert list(spool.iterdir()) == []


def test_no_staging_directory_is_left_when_cml_fails(anon, active, storage_dir, cml):
    cml.set_faults(down=True)
    assert_problem(_post_lab(anon, active, [("vars.yml", b"a")]), 502)
    cml.clear_faults()
    dangling = b"nodes: []\nlinks:\n  - {id: l0, n1: n0, n2: n1, i1: i0, i2: i0}\n"  # CML refuses it
    assert_problem(_post_lab(anon, active, topology=("bad.yaml", dangling)), 422)

    assert nothing_stored(storage_dir)


def test_no_staging_directory_is_left_when_the_lab_is_busy(anon, active, storage_dir):
    assert acquire(anon, active).status_code == 200
    before = _stored(storage_dir, active)

    assert_problem(_post_lab(anon, active, [("vars.yml", b"a")], topology=("other.yaml", OTHER_TOPOLOGY)), 423)

    assert _nothing_staged(storage_dir)
    assert _stored(storage_dir, active) == before  # the files of the claim it holds are untouched


def test_a_new_acquire_replaces_the_sessions_files(anon, active, storage_dir):
    _post_lab(anon, active, [("old.txt", b"old")])

    assert _post_lab(anon, active, [("new.txt", b"new")]).json()["reused"] is True

    assert _stored(storage_dir, active) == {"two-routers.yaml": TOPOLOGY, "new.txt": b"new"}


def test_the_files_go_on_release_and_when_the_session_ends(anon, worker, storage_dir):
    placeable_worker(session_pool="default")
    releasing, ending = create(anon)["session_id"], create(anon)["session_id"]
    for session_id in (releasing, ending):
        assert _post_lab(anon, session_id, [("vars.yml", b"a")]).status_code == 200

    lab_call(anon, "post", "/lab/release", releasing)
    anon.delete(f"{BASE}/session/{ending}")

    assert list(storage_dir.iterdir()) == []


def test_the_files_go_when_the_lab_is_destroyed(anon, active, storage_dir):
    _post_lab(anon, active, [("vars.yml", b"a")])

    assert lab_call(anon, "delete", "/lab", active).status_code == 202

    assert list(storage_dir.iterdir()) == []


def test_the_files_go_when_the_session_is_reaped(anon, active, storage_dir):
    _post_lab(anon, active, [("vars.yml", b"a")])
    Session.objects.filter(pk=active).update(last_seen_at=timezone.now() - timedelta(seconds=301))

    assert reap_sessions()["reaped_active"] == 1

    assert list(storage_dir.iterdir()) == []


def test_the_reaper_removes_a_staging_directory_an_interrupted_request_left(anon, active, storage_dir):
    _post_lab(anon, active)
    old = storage_dir / f"{storage.STAGING_PREFIX}{uuid.uuid4().hex}"
    fresh = storage_dir / f"{storage.STAGING_PREFIX}{uuid.uuid4().hex}"
    for directory in (old, fresh):
        directory.mkdir()
        (directory / "t.yaml").write_text("x")
    an_hour_ago = timezone.now().timestamp() - storage.STAGING_MAX_AGE_SECONDS - 1
    os.utime(old, (an_hour_ago, an_hour_ago))

    assert reap_sessions()["upload_dirs_removed"] == 1

    assert not old.exists() and fresh.exists()  # a request may still be writing the fresh one
    assert (storage_dir / active).is_dir()


def test_concurrent_commits_for_one_session_never_fail_and_leave_one_set_of_files(storage_dir, scan):
    # Several POST /lab of one session may finish at once (the concurrency tests send them through daphne):
    # each replaces the session's files; the last one wins, none fails, nothing is left aside.
    session_id = uuid.uuid4()
    errors = []

    def commit_many(n):
        try:
            for i in range(15):
                staged = storage.upload_stage(topology=_Upload("t.yaml", TOPOLOGY),
                                              extra_files=[_Upload("who.txt", f"{n}-{i}".encode())])
                try:
                    storage.stage_commit(staged, session_id=session_id)
                finally:
                    storage.stage_discard(staged)
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=commit_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not any(t.is_alive() for t in threads) and errors == []
    assert [p.name for p in storage_dir.iterdir()] == [str(session_id)]
    assert sorted(p.name for p in (storage_dir / str(session_id)).iterdir()) == ["t.yaml", "who.txt"]
