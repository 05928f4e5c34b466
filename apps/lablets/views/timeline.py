"""The instances' timeline: one day, one row per worker (and one for reservations not placed yet), a bar per
timeslot (docs/dashboard.md). The rows come a page of workers at a time (`?page=`), or one worker's row
(`?worker=<public id>`, or `unplaced`): a large fleet's day is not thousands of bars on one page.

The geometry is computed here and written into SVG attributes (x and width in percent of the day), so the
page needs neither inline styles nor script to draw; live.js updates the bars' status badges. Three queries
(the workers, the page's instances, the day's count) whatever the number of rows.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.core.paginator import Page, Paginator
from django.db.models import Q
from django.shortcuts import render
from django.utils import timezone
from django.utils.safestring import mark_safe

from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.selectors import lablet_instance_visible_to
from apps.workers.models import Worker, WorkerStatus
from apps.api.permissions import LABLET_INSTANCE_WRITES, LABLET_INSTANCES, allows, privileged
from apps.api.pages import page

MAX_BARS = 1000  # a page with more timeslots shows the first ones (the page says so)
WORKERS_PER_PAGE = 25  # rows of workers per page; the unplaced reservations' row ends the last page
UNPLACED = "unplaced"  # ?worker= value of the reservations not placed on a worker yet
LANE_HEIGHT = 26  # px per sub-lane: overlapping timeslots on one worker are stacked
BAR_HEIGHT = 22


@dataclass
class Bar:
    instance: LabletInstance
    left: float  # percent of the day
    width: float
    lane: int = 0

    @property
    def x(self) -> str:
        return f"{self.left:.3f}%"

    @property
    def w(self) -> str:
        return f"{self.width:.3f}%"

    @property
    def y(self) -> int:
        return self.lane * LANE_HEIGHT + (LANE_HEIGHT - BAR_HEIGHT) // 2

    # The texts of a bar, written here rather than with the template's date filter: a page has hundreds of bars.
    @property
    def label(self) -> str:
        instance = self.instance
        return f"{instance.owner_id}, {instance.status}, {clock(instance.timeslot_start)}–{clock(instance.timeslot_end)}"

    @property
    def title(self) -> str:
        instance, definition = self.instance, self.instance.definition
        return (f"{instance.owner_id} · {definition.name} {definition.version} · {moment(instance.timeslot_start)} – "
                f"{moment(instance.timeslot_end)} · {instance.public_id}")


def clock(when: datetime) -> str:
    return timezone.localtime(when).strftime("%H:%M")


def moment(when: datetime) -> str:
    return timezone.localtime(when).strftime("%Y-%m-%d %H:%M")


@dataclass
class Row:
    worker: Worker | None  # None: the reservations not placed on a worker yet
    bars: list[Bar] = field(default_factory=list)
    lanes: int = 1

    @property
    def height(self) -> int:
        return self.lanes * LANE_HEIGHT


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The day from local midnight to the next (23 or 25 hours on a daylight saving change)."""
    start = timezone.make_aware(datetime.combine(day, time.min))
    return start, timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))


def position(moment: datetime, start: datetime, end: datetime) -> float:
    """Percent of the way from `start` to `end`, clamped to the day."""
    share = (moment - start) / (end - start)
    return min(100.0, max(0.0, 100 * share))


def stack(bars: list[Bar]) -> int:
    """Give each bar the first sub-lane free at its start (bars sorted by start); returns the lanes used."""
    ends: list[datetime] = []
    for bar in bars:
        for lane, busy_until in enumerate(ends):
            if busy_until <= bar.instance.timeslot_start:
                break
        else:
            lane = len(ends)
            ends.append(bar.instance.timeslot_end)
        bar.lane = lane
        ends[lane] = bar.instance.timeslot_end
    return max(1, len(ends))


# What a bar shows (the definition's YAML and the worker's row stay in the database).
BAR_FIELDS = ("public_id", "owner_id", "status", "timeslot_start", "timeslot_end", "worker", "definition__name",
              "definition__version")


@dataclass
class Timeline:
    rows: list[Row]
    truncated: bool  # bars were left out (more than MAX_BARS on the page)
    page_obj: Page  # of the workers
    workers: list[Worker]  # every worker the day may show (the worker filter's choices)
    day_total: int  # timeslots of the day visible to the user, on every page
    worker: Worker | None = None  # the worker filter's
    unplaced_only: bool = False


def _day_instances(*, user, start: datetime, end: datetime):
    return (lablet_instance_visible_to(user=user)
            .filter(timeslot_start__lt=end, timeslot_end__gt=start)
            .exclude(status=InstanceStatus.TERMINATED, instantiating_at__isnull=True))  # cancelled, never brought up


def timeline_rows(*, user, start: datetime, end: datetime, worker: str = "", page=None,
                  per_page: int | None = None) -> Timeline:
    """The rows of the day for `user` (instructors: their own instances, on the workers that hold them;
    operators and admins: every worker not terminated as well, and a terminated one that held a timeslot
    that day), a page of `per_page` workers (`page`), or only the row of `worker` (a public id, or
    UNPLACED). Raises Worker.DoesNotExist for a worker the day does not show."""
    day = _day_instances(user=user, start=start, end=end)
    held = Q(pk__in=day.filter(worker__isnull=False).values("worker_id"))
    candidates = Worker.objects.filter((~Q(status=WorkerStatus.TERMINATED) | held) if privileged(user) else held)
    workers = list(candidates.order_by("name", "pk").only("pk", "public_id", "name", "status"))
    chosen, unplaced_only = None, worker == UNPLACED
    if worker and not unplaced_only:
        chosen = next((candidate for candidate in workers if candidate.public_id == worker), None)
        if chosen is None:
            raise Worker.DoesNotExist(worker)
    page_obj = Paginator([chosen] if chosen else [] if unplaced_only else workers,
                         per_page or WORKERS_PER_PAGE).get_page(page)
    shown = list(page_obj.object_list)
    with_unplaced = not chosen and (unplaced_only or not page_obj.has_next())
    on_page = Q(worker_id__in=[candidate.pk for candidate in shown])
    if with_unplaced:
        on_page |= Q(worker__isnull=True)
    instances = list(day.filter(on_page).select_related(None).select_related("definition").only(*BAR_FIELDS)
                     .order_by("timeslot_start", "pk")[: MAX_BARS + 1])
    truncated = len(instances) > MAX_BARS
    rows: dict[int | None, Row] = {candidate.pk: Row(worker=candidate) for candidate in shown}
    for instance in instances[:MAX_BARS]:
        if instance.worker_id not in rows:  # only the unplaced reservations: the others are on the page's workers
            rows[instance.worker_id] = Row(worker=None)
        row = rows[instance.worker_id]
        left = position(instance.timeslot_start, start, end)
        width = max(0.3, position(instance.timeslot_end, start, end) - left)  # a short slot stays visible
        row.bars.append(Bar(instance=instance, left=left, width=width))
    for row in rows.values():
        row.lanes = stack(row.bars)
    placed = [row for key, row in rows.items() if key is not None]  # in the workers' order (name, pk)
    return Timeline(rows=placed + ([rows[None]] if None in rows else []), truncated=truncated, page_obj=page_obj,
                    workers=workers, day_total=day.count(), worker=chosen, unplaced_only=unplaced_only)


def hour_marks(start: datetime, end: datetime) -> list[dict]:
    """A line per hour of the day, labelled every third hour with the local hour (right on DST days too)."""
    hours = round((end - start) / timedelta(hours=1))
    return [{"x": f"{100 * hour / hours:.3f}%",
             "label": timezone.localtime(start + timedelta(hours=hour)).strftime("%H:%M"),
             "labelled": hour % 3 == 0,
             "anchor": "start" if hour == 0 else "end" if hour == hours else "middle"}
            for hour in range(hours + 1)]


def hour_lines(hours: list[dict]) -> str:
    """The hour lines of a lane, the same in every row: written once per page (numbers only: safe)."""
    return mark_safe("".join(f'<line class="hour" x1="{mark["x"]}" x2="{mark["x"]}" y1="0" y2="100%"/>'
                             for mark in hours))


@page(LABLET_INSTANCES)
def instance_timeline(request):
    today = timezone.localdate()
    query = request.GET.copy()  # the links of the pager go on from what is shown
    query.pop("page", None)
    errors, status = [], 200
    try:
        day = date.fromisoformat(request.GET["day"]) if request.GET.get("day") else today
    except ValueError:
        errors.append(f"Not a day: {request.GET['day'][:40]!r} (YYYY-MM-DD). Showing today.")
        day, status = today, 400
        query.pop("day")
    start, end = day_bounds(day)
    worker = request.GET.get("worker", "").strip()
    try:
        timeline = timeline_rows(user=request.user, start=start, end=end, worker=worker, page=request.GET.get("page"))
    except Worker.DoesNotExist:
        errors.append(f"No worker {worker[:40]!r} on this day's timeline. Showing every worker.")
        status = 404
        query.pop("worker")
        timeline = timeline_rows(user=request.user, start=start, end=end, page=request.GET.get("page"))
    now = timezone.now()
    hours = hour_marks(start, end)
    return render(request, "lablets/timeline.html", {
        "day": day, "today": today, "previous": day - timedelta(days=1), "next": day + timedelta(days=1),
        "timeline": timeline, "rows": timeline.rows, "truncated": timeline.truncated, "max_bars": MAX_BARS,
        "page_obj": timeline.page_obj, "query": query.urlencode(), "unplaced": UNPLACED,
        "worker_query": f"&worker={timeline.worker.public_id}" if timeline.worker else
                        f"&worker={UNPLACED}" if timeline.unplaced_only else "",
        "hours": hours, "hour_lines": hour_lines(hours),
        "now_x": f"{position(now, start, end):.3f}%" if start <= now < end else None,
        "bar_height": BAR_HEIGHT, "bar_count": sum(len(row.bars) for row in timeline.rows),
        "time_zone": timezone.get_current_timezone_name(), "error": " ".join(errors),
        "can_schedule": allows(LABLET_INSTANCE_WRITES, user=request.user),
    }, status=status)
