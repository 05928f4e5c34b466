"""Remote-lab sessions: per-pool FIFO queues of sessions, and the shared lab of each worker.

docs/remote-lab.md explains the design; in short:
- a Session's ticket is its place in the arrival order (a sequence on PostgreSQL, the pool's counter on
  SQLite); its queue position is derived when read (the waiting sessions of its pool with a lower
  ticket, plus one: one indexed count), so a session joins or leaves the queue without touching any
  other row;
- a SessionPool row is the lock of every change that hands out workers (docs/remote-lab.md, Concurrency);
- a SessionLab row per worker is that worker's lab slot (and the row POST /lab locks); a LabClaim is
  one session's reference on it (ref_count = number of claims); a LabTeardown is a CML lab still to
  be deleted (durable until the teardown task has removed it).
"""

import uuid

from django.conf import settings
from django.db import models

from apps.workers.models import Worker
from apps.core.indexes import PostgresBrinIndex, PostgresPartialIndex


class SessionStatus(models.TextChoices):
    WAITING = "waiting"  # in the pool's FIFO queue, position 1..n
    ACTIVE = "active"  # bound to one worker of the pool, position 0
    ENDED = "ended"  # DELETE /session/{id} or an operator ended it
    # Not heard from within the stale timeout. Not stored: a reaped session's row is deleted when it is
    # journalled as session.reaped (services/queue.py, _reap_and_journal); rows of older versions in
    # this state are deleted by the purge.
    REAPED = "reaped"


class LabStatus(models.TextChoices):
    EMPTY = "empty"  # no lab on the worker (or the last one was handed to a teardown)
    STARTING = "starting"  # an acquire is importing/starting it on CML
    RUNNING = "running"  # up; ref_count sessions hold a claim on it (0: idle, may be replaced)


# The live sessions (waiting, active): what the queue's indexes hold on PostgreSQL. Ended sessions are
# history, found by their key or by ended_at (reaped ones are deleted): left out of these indexes, they
# cost no index upkeep when they end and keep the indexes the size of the queue (docs/performance.md).
LIVE_ROWS = models.Q(status__in=[SessionStatus.WAITING, SessionStatus.ACTIVE])


ANONYMOUS_LAB_OWNER = "anonymous"  # SessionLab.owner_key of a lab an anonymous client's session started


def user_owner_key(user_id: int) -> str:
    """Session.owner_key (and SessionLab.owner_key) of a user's sessions."""
    return f"user:{user_id}"


class SessionPool(models.Model):
    """A queue: the workers whose `session_pool` is this name serve its sessions."""

    name = models.CharField(max_length=50, unique=True)
    next_ticket = models.PositiveBigIntegerField(default=1, editable=False,
                                                 help_text="Arrival number of the next session (FIFO order).")
    usable_workers = models.PositiveIntegerField(default=0, editable=False,
                                                 help_text="Usable workers at the last maintenance pass.")
    avg_session_seconds = models.FloatField(null=True, blank=True, editable=False,
                                            help_text="Moving average of how long sessions stay active.")
    sessions_finished = models.PositiveBigIntegerField(default=0, editable=False)
    maintained_at = models.DateTimeField(null=True, blank=True, editable=False,
                                         help_text="Last reaping/promotion pass over this pool.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Session(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: session_pool_queue and session_unique_ticket start with pool (fewer indexes to
    # maintain when 100,000 sessions are reaped at once: docs/performance.md).
    pool = models.ForeignKey(SessionPool, on_delete=models.PROTECT, related_name="sessions", db_index=False)
    ticket = models.PositiveBigIntegerField(editable=False, help_text="Arrival order within the pool.")
    status = models.CharField(max_length=10, choices=SessionStatus.choices, default=SessionStatus.WAITING)
    # worker and owner: no index of their own. The active sessions are found by worker through
    # session_one_active_per_worker; nothing looks sessions up by owner but the deletion of a user or a
    # worker (a scan, rare), and every new row version (a session ending) would add an entry to both.
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="lab_sessions",
                               db_index=False, help_text="The worker an active session holds.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="lab_sessions", db_index=False, help_text="Blank: an anonymous client.")
    # Who the session belongs to, kept when the user goes (owner is then NULL): "user:<id>", or "" for an
    # anonymous client. Only a blank owner_key is anonymous: a deleted user's session never becomes one.
    owner_key = models.CharField(max_length=64, blank=True, editable=False,
                                 help_text="user:<id>, or blank for an anonymous client (kept if the user is deleted).")
    actor = models.CharField(max_length=150, help_text="Who created it, as the audit journal names them.")
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    activated_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=100, blank=True)

    class Meta:
        # pool_id, not pool: "pool" orders by the pool's name, a join in every .first() and list.
        ordering = ["pool_id", "ticket"]
        indexes = [
            PostgresPartialIndex(fields=["pool", "status", "ticket"], condition=LIVE_ROWS, name="session_pool_queue"),
            PostgresPartialIndex(fields=["status", "last_seen_at"], condition=LIVE_ROWS, name="session_staleness"),
            # History by its end time (the purge): ended_at only grows, as rows are written.
            PostgresBrinIndex(fields=["ended_at"], name="session_ended"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=SessionStatus.values), name="session_status_valid"),
            # Tickets come from one sequence (or the pool's counter): the index keeps the live queue's order unique.
            models.UniqueConstraint(fields=["pool", "ticket"], condition=LIVE_ROWS, name="session_unique_ticket"),
            models.UniqueConstraint(fields=["worker"], condition=models.Q(status=SessionStatus.ACTIVE),
                                    name="session_one_active_per_worker"),
        ]

    def __str__(self):
        return f"{self.id} ({self.status}, {self.pool_id and self.pool.name})"

    @property
    def position(self) -> int:
        """0 unless waiting; else the place in its pool's queue: the waiting sessions of the pool with a
        lower ticket, plus one. Counted on first read (one indexed count) unless a selector annotated
        `queue_position` (apps.sessions.selectors.with_positions) or a service set it."""
        if self.status != SessionStatus.WAITING:
            return 0
        if self.__dict__.get("queue_position") is None:
            self.__dict__["queue_position"] = Session.objects.filter(
                pool_id=self.pool_id, status=SessionStatus.WAITING, ticket__lt=self.ticket).count() + 1
        return self.__dict__["queue_position"]

    @position.setter
    def position(self, value: int) -> None:
        self.__dict__["queue_position"] = value

    @property
    def lab_owner_key(self) -> str:
        """The principal a lab this session starts belongs to (SessionLab.owner_key): its user, or, for an
        anonymous client, `anonymous`: anonymous clients cannot be told apart, and the seed's reuse (an idle lab
        kept running for the next session, docs/remote-lab.md) is theirs as one principal. A user's lab is never
        an anonymous client's, nor the other way round."""
        return self.owner_key or ANONYMOUS_LAB_OWNER


class SessionLab(models.Model):
    """The lab slot of one worker: which topology runs there for sessions, and how many hold it."""

    worker = models.OneToOneField(Worker, on_delete=models.CASCADE, related_name="session_lab")
    status = models.CharField(max_length=10, choices=LabStatus.choices, default=LabStatus.EMPTY)
    # The principal whose session started the lab (Session.lab_owner_key): only sessions of that principal
    # see it, attach to it or are handed it; blank while EMPTY (and for labs started before it was recorded:
    # nobody's, replaced by the next acquire).
    owner_key = models.CharField(max_length=64, blank=True,
                                 help_text="user:<id>, or anonymous, whose session started it.")
    topology_sha256 = models.CharField(max_length=64, blank=True)
    topology_name = models.CharField(max_length=255, blank=True)
    cml_lab_id = models.CharField(max_length=64, blank=True)
    ref_count = models.PositiveIntegerField(default=0, help_text="Sessions holding a claim on it.")
    devices = models.JSONField(default=list, blank=True)
    start_token = models.UUIDField(null=True, blank=True, editable=False,
                                   help_text="The acquire that is starting it (STARTING only).")
    started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_error = models.CharField(max_length=500, blank=True)
    # What the lab holds on the worker while STARTING or RUNNING (its topology's nodes, CPUs, memory and disk,
    # apps.workers.cml.topology_policy): its rows in the capacity ledger (apps.workers.ledger), open-ended.
    cpu_cores = models.PositiveIntegerField(default=0, db_default=0)
    memory_gb = models.PositiveIntegerField(default=0, db_default=0)
    storage_gb = models.PositiveIntegerField(default=0, db_default=0)
    node_count = models.PositiveIntegerField(default=0, db_default=0)
    held_since = models.DateTimeField(null=True, blank=True, help_text="When the lab began to hold capacity.")

    class Meta:
        ordering = ["worker_id"]  # not "worker": that orders by the worker's own ordering, through a join
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=LabStatus.values), name="session_lab_status_valid"),
            models.CheckConstraint(condition=models.Q(ref_count__gte=0), name="session_lab_ref_count_positive"),
        ]

    def __str__(self):
        return f"lab on {self.worker_id} ({self.status}, {self.topology_sha256[:12] or '-'}, refs {self.ref_count})"


class LabClaim(models.Model):
    """One session's reference on its worker's lab: a session holds at most one."""

    # No foreign key constraint in the database: it would check, at commit, every session row a reaping
    # deletes (docs/performance.md). The services keep it: a claim is dropped
    # before its session ends or is reaped, under the lock of the lab slot that acquiring takes too.
    session = models.OneToOneField(Session, on_delete=models.CASCADE, related_name="lab_claim", db_constraint=False)
    lab = models.ForeignKey(SessionLab, on_delete=models.CASCADE, related_name="claims")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.session_id} -> {self.lab_id}"


class LabTeardown(models.Model):
    """A CML lab to delete: written in the transaction that drops it, removed once CML has deleted it."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="session_lab_teardowns")
    cml_lab_id = models.CharField(max_length=64)
    topology_sha256 = models.CharField(max_length=64, blank=True)
    reason = models.CharField(max_length=100, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["requested_at"]

    def __str__(self):
        return f"teardown of {self.cml_lab_id} on {self.worker_id}"
