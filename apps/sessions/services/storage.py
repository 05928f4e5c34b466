"""Files uploaded with POST /lab: checked, staged, then kept beside the topology in the session's directory.

Layout under settings.SESSION_STORAGE_DIR:
    .incoming-<hex>/      one request's upload while it is checked and the lab comes up
    .replaced-<hex>/      a session's previous files, for the moment a new upload takes their place
    <session uuid>/       the topology and extra files of the session's current lab claim

A session directory lives as long as the session's claim: it is removed on release, when the session
ends or is reaped, when its lab is destroyed, and the staging directory whenever the request fails.
The reaper removes anything else it finds (an interrupted request's leftovers).
Nothing is ever written outside SESSION_STORAGE_DIR: names are checked, never joined blindly.
"""

import errno
import hashlib
import logging
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from apps.core.errors import BadRequest, PayloadTooLarge, ValidationFailed

log = logging.getLogger(__name__)

TOPOLOGY_SUFFIXES = (".yml", ".yaml")
# One path component: starts with a letter, digit or underscore; then those, dots, dashes and spaces.
SAFE_NAME = re.compile(r"^\w[\w.\- ]{0,199}$")
STAGING_PREFIX = ".incoming-"
REPLACED_PREFIX = ".replaced-"  # a session's previous files, set aside while new ones take their place
COMMIT_ATTEMPTS = 20
STAGING_MAX_AGE_SECONDS = 3600  # the reaper removes older staging directories (an interrupted request)
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the files themselves


@dataclass
class StagedUpload:
    directory: Path
    topology_name: str
    topology_text: str
    topology_sha256: str
    extra_names: list[str]
    committed: bool = False


def storage_root() -> Path:
    return Path(settings.SESSION_STORAGE_DIR)


def session_dir(session_id) -> Path:
    return storage_root() / str(uuid.UUID(str(session_id)))  # a UUID: never a path of its own


def upload_check_length(content_length) -> None:
    """Refuse an oversized body before it is parsed (413)."""
    try:
        length = int(content_length or 0)
    except (TypeError, ValueError):
        return
    if length > settings.SESSION_UPLOAD_MAX_BYTES + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"The upload is {length} bytes; at most {settings.SESSION_UPLOAD_MAX_BYTES} bytes of "
                              "files are accepted.")


def safe_name(raw: str | None, *, field: str) -> str:
    """The file name as stored, or 422: no directories, no traversal, no absolute paths, no odd characters."""
    name = (raw or "").strip()
    if "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or not SAFE_NAME.match(name):
        raise ValidationFailed(f"Unsafe file name {name[:100]!r} in {field}: use a plain name of letters, digits, "
                               "'.', '-', '_' or spaces.", errors={field: [f"Unsafe file name {name[:100]!r}."]})
    return name


def topology_name_check(raw: str | None) -> str:
    """The seed's rule (400) first: a file name ending in .yml or .yaml, any case."""
    if not raw:
        raise BadRequest("Topology file must have a filename")
    if not raw.lower().endswith(TOPOLOGY_SUFFIXES):
        raise BadRequest("Topology must be a .yml or .yaml file")
    return safe_name(raw, field="topology")


def upload_stage(*, topology, extra_files: list) -> StagedUpload:
    """Check the upload and write it to a fresh staging directory (removed again if anything fails).

    `topology` and `extra_files` are uploaded files (`.name`, `.size`, `.chunks()`).
    400: topology name; 422: unsafe or duplicate names, too many files, topology not UTF-8;
    413: more than SESSION_UPLOAD_MAX_BYTES in all."""
    topology_name = topology_name_check(getattr(topology, "name", None))
    if len(extra_files) > settings.SESSION_UPLOAD_MAX_FILES:
        raise ValidationFailed(f"At most {settings.SESSION_UPLOAD_MAX_FILES} extra files are accepted, "
                               f"{len(extra_files)} were sent.", errors={"extra_files": ["Too many files."]})
    names = [topology_name]
    for item in extra_files:
        name = safe_name(getattr(item, "name", None), field="extra_files")
        if name.lower() in {n.lower() for n in names}:
            raise ValidationFailed(f"Two uploaded files are named {name!r}.",
                                   errors={"extra_files": [f"Duplicate file name {name!r}."]})
        names.append(name)
    total = sum(int(getattr(f, "size", 0) or 0) for f in [topology, *extra_files])
    limit = settings.SESSION_UPLOAD_MAX_BYTES
    if total > limit:
        raise PayloadTooLarge(f"The files are {total} bytes in all; at most {limit} bytes are accepted.")

    root = storage_root()
    staging = root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        written = 0
        digest = hashlib.sha256()
        topology_bytes = bytearray()
        for name, item in zip(names, [topology, *extra_files]):
            target = staging / name
            if target.resolve().parent != staging.resolve():  # belt and braces: SAFE_NAME already forbids it
                raise ValidationFailed(f"Unsafe file name {name!r}.")
            with open(target, "xb") as out:
                for chunk in item.chunks():
                    written += len(chunk)
                    if written > limit:  # sizes were declared by the client: count what really arrives
                        raise PayloadTooLarge(f"The files are over {limit} bytes in all.")
                    out.write(chunk)
                    if item is topology:
                        digest.update(chunk)
                        topology_bytes += chunk
        try:
            text = bytes(topology_bytes).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationFailed("The topology is not UTF-8 text.", errors={"topology": ["Not UTF-8 text."]}) from None
        return StagedUpload(directory=staging, topology_name=topology_name, topology_text=text,
                            topology_sha256=digest.hexdigest(), extra_names=names[1:])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def stage_commit(staged: StagedUpload, *, session_id) -> Path:
    """Make the staged files the session's files (replacing the previous ones).

    Several POST /lab of one session may commit at once: each moves the current directory aside and
    renames its own into place; a rename that finds another request's files there just arrived goes
    round again (the last one wins, none fails). Set-aside directories are removed at once (the reaper's
    sweep removes any an interrupted request left)."""
    target = session_dir(session_id)
    for _ in range(COMMIT_ATTEMPTS):
        aside = target.with_name(f"{REPLACED_PREFIX}{uuid.uuid4().hex}")
        try:
            target.rename(aside)
        except FileNotFoundError:
            aside = None
        try:
            staged.directory.rename(target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
        staged.committed = True
        return target
    raise OSError(errno.EBUSY, "The session's files kept changing under this upload", str(target))


def stage_discard(staged: StagedUpload) -> None:
    if not staged.committed:
        shutil.rmtree(staged.directory, ignore_errors=True)


def session_files_remove(session_ids) -> None:
    """Remove the directories of these sessions (those that have one)."""
    for session_id in session_ids:
        path = session_dir(session_id)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def storage_sweep(*, keep: set[str]) -> int:
    """Remove every directory under the storage root that is not a session in `keep` (sessions holding
    a claim) or a staging directory of a request still in progress; returns how many were removed."""
    root = storage_root()
    if not root.is_dir():
        return 0
    removed = 0
    now = time.time()
    for entry in root.iterdir():
        if entry.name.startswith(STAGING_PREFIX):
            if now - entry.stat().st_mtime < STAGING_MAX_AGE_SECONDS:
                continue
        elif entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed
