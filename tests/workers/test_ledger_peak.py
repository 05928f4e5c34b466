"""The capacity ledger's sweep (apps.workers.ledger.peak_of): the most held at any moment of a window, per
dimension; not a count, not a sum."""

from datetime import datetime, timedelta, timezone

from apps.workers.ledger import INSTANCE, OPEN_END, SESSION_LAB, peak_of

T0 = datetime(2031, 3, 10, 9, tzinfo=timezone.utc)


def row(start_h, end_h, cpu, kind=INSTANCE):
    end = OPEN_END if end_h is None else T0 + timedelta(hours=end_h)
    return (1, T0 + timedelta(hours=start_h), end, cpu, 0, 0, 0, 0, kind)


def test_back_to_back_holdings_do_not_add_up():
    rows = [row(0, 1, 20), row(1, 2, 20), row(0, 2, 20)]
    assert peak_of(rows, T0, T0 + timedelta(hours=2))[:1] == [40]
    assert peak_of(rows, T0, T0 + timedelta(hours=2))[5] == 2  # two labs at once, at most


def test_staggered_holdings_peak_where_they_overlap_and_an_open_ended_one_counts_from_its_start():
    rows = [row(0, 2, 10), row(1, 3, 10), row(2, 4, 10), row(3, None, 5, SESSION_LAB)]
    assert peak_of(rows, T0, OPEN_END)[0] == 20
    assert peak_of(rows, T0 + timedelta(hours=3), OPEN_END)[0] == 15  # [3, 4): 10 + the lab's 5
    assert peak_of(rows, T0 + timedelta(hours=4), OPEN_END)[0] == 5
    assert peak_of([], T0, OPEN_END) == [0] * 6
