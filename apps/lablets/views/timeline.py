"""The instances' timeline: one day, one row per worker (and one for reservations not placed yet), a bar per
timeslot (docs/dashboard.md).

The geometry is computed here and written into SVG attributes (x and width in percent of the day), so the
page needs neither inline styles nor script to draw; live.js updates the bars' status badges. Two queries
(workers, instances) whatever the number of rows.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.shortcuts import render
from django.utils import timezone

from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.selectors import lablet_instance_visible_to
from apps.workers.models import Worker, WorkerStatus
from apps.api.permissions import LABLET_INSTANCE_WRITES, LABLET_INSTANCES, allows, privileged
from apps.api.pages import page

MAX_BARS = 1000  # a day with more timeslots shows the first ones (the page says so)
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


def timeline_rows(*, user, start: datetime, end: datetime) -> tuple[list[Row], bool]:
    """The rows of the day for `user` (instructors: their own instances, on the workers that hold them;
    operators and admins: every worker not terminated as well), and whether bars were left out."""
    instances = list(
        lablet_instance_visible_to(user=user)
        .filter(timeslot_start__lt=end, timeslot_end__gt=start)
        .exclude(status=InstanceStatus.TERMINATED, instantiating_at__isnull=True)  # cancelled, never brought up
        .order_by("timeslot_start", "pk")[: MAX_BARS + 1]
    )
    truncated = len(instances) > MAX_BARS
    rows: dict[int | None, Row] = {}
    if privileged(user):
        for worker in Worker.objects.exclude(status=WorkerStatus.TERMINATED).order_by("name", "pk"):
            rows[worker.pk] = Row(worker=worker)
    for instance in instances[:MAX_BARS]:
        row = rows.setdefault(instance.worker_id, Row(worker=instance.worker))
        left = position(instance.timeslot_start, start, end)
        width = max(0.3, position(instance.timeslot_end, start, end) - left)  # a short slot stays visible
        row.bars.append(Bar(instance=instance, left=left, width=width))
    for row in rows.values():
        row.lanes = stack(row.bars)
    placed = sorted((row for key, row in rows.items() if key is not None),
                    key=lambda row: (row.worker.name, row.worker.pk))
    return placed + ([rows[None]] if None in rows else []), truncated


def hour_marks(start: datetime, end: datetime) -> list[dict]:
    """A line per hour of the day, labelled every third hour with the local hour (right on DST days too)."""
    hours = round((end - start) / timedelta(hours=1))
    return [{"x": f"{100 * hour / hours:.3f}%",
             "label": timezone.localtime(start + timedelta(hours=hour)).strftime("%H:%M"),
             "labelled": hour % 3 == 0,
             "anchor": "start" if hour == 0 else "end" if hour == hours else "middle"}
            for hour in range(hours + 1)]


@page(LABLET_INSTANCES)
def instance_timeline(request):
    today = timezone.localdate()
    error, status = None, 200
    try:
        day = date.fromisoformat(request.GET["day"]) if request.GET.get("day") else today
    except ValueError:
        day, error, status = today, f"Not a day: {request.GET['day'][:40]!r} (YYYY-MM-DD). Showing today.", 400
    start, end = day_bounds(day)
    rows, truncated = timeline_rows(user=request.user, start=start, end=end)
    now = timezone.now()
    return render(request, "lablets/timeline.html", {
        "day": day, "today": today, "previous": day - timedelta(days=1), "next": day + timedelta(days=1),
        "rows": rows, "truncated": truncated, "max_bars": MAX_BARS, "hours": hour_marks(start, end),
        "now_x": f"{position(now, start, end):.3f}%" if start <= now < end else None,
        "bar_height": BAR_HEIGHT, "bar_count": sum(len(row.bars) for row in rows),
        "time_zone": timezone.get_current_timezone_name(), "error": error,
        "can_schedule": allows(LABLET_INSTANCE_WRITES, user=request.user),
    }, status=status)
