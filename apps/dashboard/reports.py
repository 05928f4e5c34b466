"""The reports page's figures (docs/dashboard.md#reports-operators-admins): `fleet_report`'s rows (one per worker per day
with activity) summed per worker, per day and over the range, the series the chart draws, and the CSV.

Definitions (those of `fleet_report`, apps/lablets/services/fleet_cost.py; days in TIME_ZONE):
- running hours: the worker's WorkerRunPeriods clipped to the day (an open one counts up to now);
- booked hours / booked CPU-hours: the timeslots of the lablet instances placed on the worker, clipped to
  the day and cut short where the instance stopped or was terminated (× the instance's CPU cores);
- utilisation: booked CPU-hours / (the worker's CPU cores × its running hours), in %; none without
  running hours. Summed over days or workers it is the same ratio of the sums, not a mean of percentages;
- warm hours / warm cost: the hours the worker held warm-pool labs (booted ahead, not yet taken by an
  instance) and their share of the worker's cost by CPU (docs/workers.md#warm-pools): a separate line of the
  page, two more columns of the CSV.

Four queries whatever the range and the fleet (those of `fleet_report`); the rest is arithmetic.
"""

import csv
from datetime import date, datetime, timedelta

from apps.lablets.services.fleet_cost import fleet_report

CSV_COLUMNS = ("date", "worker_id", "worker_name", "cpu_cores", "running_hours", "booked_hours",
               "booked_cpu_hours", "utilisation_percent", "cost", "warm_hours", "warm_cost")


def _sum(rows: list[dict]) -> dict:
    capacity = sum(r["cpu_cores"] * r["running_hours"] for r in rows)
    cpu = sum(r["booked_cpu_hours"] for r in rows)
    costs = [r["cost"] for r in rows if r["cost"] is not None]
    warm_costs = [r["warm_cost"] for r in rows if r["warm_cost"] is not None]
    return {
        "warm_hours": sum(r["warm_hours"] for r in rows),
        "warm_cost": sum(warm_costs) if warm_costs else None,
        "running_hours": sum(r["running_hours"] for r in rows),
        "booked_hours": sum(r["booked_hours"] for r in rows),
        "booked_cpu_hours": cpu,
        "utilisation_percent": 100 * cpu / capacity if capacity else None,
        "cost": sum(costs) if costs else None,
    }


def fleet_report_summary(*, start: date, end: date, now: datetime | None = None) -> dict:
    """`rows` (by day, then worker name), `days` (each day with activity: its rows and their sum),
    `workers` (each worker's sum over the range, by name), `total`, and `chart`: every day of the range
    as a label, each worker's running hours per day (0 where it did not run) and the fleet's utilisation
    per day (None where no worker ran)."""
    rows = sorted(fleet_report(start=start, end=end, now=now), key=lambda r: r["date"])  # stable: names stay sorted
    by_day: dict[date, list[dict]] = {}
    by_worker: dict[str, list[dict]] = {}
    for row in rows:
        by_day.setdefault(row["date"], []).append(row)
        by_worker.setdefault(row["worker_id"], []).append(row)
    labels = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    day_sums = {day: _sum(day_rows) for day, day_rows in by_day.items()}
    workers = sorted(
        ({"worker_id": worker_id, "worker_name": group[0]["worker_name"], "cpu_cores": group[0]["cpu_cores"],
          **_sum(group)} for worker_id, group in by_worker.items()),
        key=lambda w: (w["worker_name"], w["worker_id"]),
    )
    hours = {(r["worker_id"], r["date"]): r["running_hours"] for r in rows}
    return {
        "rows": rows,
        "days": [{"date": day, "rows": by_day[day], **day_sums[day]} for day in labels if day in by_day],
        "workers": workers,
        "total": {**_sum(rows), "worker_count": len(workers)},
        "chart": {
            "labels": [day.isoformat() for day in labels],
            "workers": [{"name": w["worker_name"], "hours": [round(hours.get((w["worker_id"], day), 0.0), 2)
                                                             for day in labels]} for w in workers],
            "utilisation": [None if day not in day_sums or day_sums[day]["utilisation_percent"] is None
                            else round(day_sums[day]["utilisation_percent"], 1) for day in labels],
        },
    }


def _text(value: str) -> str:
    """A spreadsheet must not read a name as a formula (=, +, -, @ first): prefixed with a quote."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@") else value


def fleet_report_csv(rows: list[dict], out) -> None:
    """Write `rows` (fleet_report_summary's) as CSV to `out`: a header row (CSV_COLUMNS), then one row per
    worker per day with activity; hours to 4 decimals, utilisation to 2 (blank: no running hours), costs to
    4 (blank: no worker template)."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        util, cost = row["utilisation_percent"], row["cost"]
        writer.writerow([
            row["date"].isoformat(), row["worker_id"], _text(row["worker_name"]), row["cpu_cores"],
            f"{row['running_hours']:.4f}", f"{row['booked_hours']:.4f}", f"{row['booked_cpu_hours']:.4f}",
            "" if util is None else f"{util:.2f}", "" if cost is None else f"{cost:.4f}",
            f"{row['warm_hours']:.4f}", "" if row["warm_cost"] is None else f"{row['warm_cost']:.4f}",
        ])
