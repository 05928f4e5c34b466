"""Print running hours, booked hours, utilisation and cost per worker for a date range."""

import csv
from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.lablets.services.fleet_cost import fleet_report

COLUMNS = ("worker_id", "worker_name", "running_hours", "booked_hours", "utilisation_percent", "cost")


def _date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option} must be a date as YYYY-MM-DD, not {value!r}.")


def _summary(key: tuple, rows: list[dict]) -> dict:
    """Sum days (and workers): utilisation is booked CPU-hours over cores × running hours, overall."""
    capacity = sum(r["cpu_cores"] * r["running_hours"] for r in rows)
    costs = [r["cost"] for r in rows if r["cost"] is not None]
    return {
        "key": key,
        "running_hours": sum(r["running_hours"] for r in rows),
        "booked_hours": sum(r["booked_hours"] for r in rows),
        "utilisation_percent": 100 * sum(r["booked_cpu_hours"] for r in rows) / capacity if capacity else None,
        "cost": sum(costs) if costs else None,
    }


class Command(BaseCommand):
    help = ("Running hours, booked instance-hours, utilisation and cost per worker for a date range "
            "(default: the last 7 days, today included), with a total.")

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="first day (default: 6 days ago)")
        parser.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="last day, included (default: today)")
        parser.add_argument("--format", choices=("table", "csv"), default="table")
        parser.add_argument("--daily", action="store_true", help="one row per worker per day")

    def handle(self, *args, **options):
        today = timezone.localdate()
        end = _date(options["end"], "--to") if options["end"] else today
        start = _date(options["start"], "--from") if options["start"] else end - timedelta(days=6)
        if end < start:
            raise CommandError(f"--from ({start}) is after --to ({end}).")
        rows = fleet_report(start=start, end=end)

        groups: dict[tuple, list[dict]] = {}
        for row in rows:
            key = (row["date"].isoformat(),) if options["daily"] else ()
            groups.setdefault(key + (row["worker_id"], row["worker_name"]), []).append(row)
        lines = [_summary(key, group) for key, group in groups.items()]
        if options["daily"]:
            lines.sort(key=lambda line: line["key"][0])  # stable: workers stay in name order
        workers = len({row["worker_id"] for row in rows})
        total_key = (("",) if options["daily"] else ()) + ("total", f"{workers} worker(s)")
        total = _summary(total_key, rows)

        if options["format"] == "csv":
            self._csv([*lines, total], daily=options["daily"])
        else:
            self._table(lines, total, start=start, end=end, daily=options["daily"])

    def _csv(self, lines: list[dict], *, daily: bool) -> None:
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow((("date",) if daily else ()) + COLUMNS)
        for line in lines:
            util, cost = line["utilisation_percent"], line["cost"]
            writer.writerow([*line["key"], f"{line['running_hours']:.4f}", f"{line['booked_hours']:.4f}",
                             "" if util is None else f"{util:.2f}", "" if cost is None else f"{cost:.4f}"])

    def _table(self, lines: list[dict], total: dict, *, start: date, end: date, daily: bool) -> None:
        self.stdout.write(f"Fleet report {start} to {end} ({timezone.get_current_timezone_name()})")
        date_column = f"{'date':<11}" if daily else ""
        header = (f"{date_column}{'worker':<24} {'name':<24} {'running h':>10} {'booked h':>10} {'util %':>7} "
                  f"{'cost':>10}")
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for line in lines:
            self.stdout.write(self._table_line(line, daily))
        self.stdout.write("-" * len(header))
        self.stdout.write(self._table_line(total, daily))

    @staticmethod
    def _table_line(line: dict, daily: bool) -> str:
        *day, worker_id, name = line["key"]
        util, cost = line["utilisation_percent"], line["cost"]
        return (f"{day[0]:<11}" if daily else "") + (
            f"{worker_id:<24} {name[:24]:<24} {line['running_hours']:>10.2f} {line['booked_hours']:>10.2f} "
            f"{'-' if util is None else f'{util:.1f}':>7} {'-' if cost is None else f'{cost:.2f}':>10}"
        )
