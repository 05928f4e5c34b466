"""Timestamps written as ISO 8601 text by the database itself, for reads that only pass them on (a list
page's rows, a journal row's metadata): no datetime is built in Python only to be turned back into text
(docs/performance.md measures what that saves on a list page)."""

from django.db.models import Func, TextField


class IsoDateTime(Func):
    """The timestamp in UTC exactly as Python writes `datetime.isoformat()` (no fraction when the
    microseconds are zero), ending in `suffix`: "+00:00" as isoformat() writes UTC, "Z" as DRF's
    DateTimeField does. NULL stays NULL."""

    output_field = TextField()

    def __init__(self, expression, *, suffix: str = "+00:00"):
        if suffix not in ("+00:00", "Z"):
            raise ValueError(f"unsupported suffix {suffix!r}")
        super().__init__(expression)
        self.suffix = suffix

    def as_postgresql(self, compiler, connection, **extra):
        utc = "(%(expressions)s AT TIME ZONE 'UTC')"
        template = (f"(to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN date_trunc('second', {utc}) = {utc} "
                    f"THEN '' ELSE to_char({utc}, '.US') END || '{self.suffix}')")
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler, connection, **extra):
        # Stored as naive UTC text, str() of the datetime: `2026-11-23 12:00:00[.123456]`.
        return self.as_sql(compiler, connection, template=f"(replace(%(expressions)s, ' ', 'T') || '{self.suffix}')",
                           **extra)
