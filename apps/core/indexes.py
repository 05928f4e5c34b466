"""Indexes that PostgreSQL and SQLite each get in the form that serves them (docs/performance.md, reaping).

- `PostgresPartialIndex`: partial (its `condition`) on PostgreSQL, whose planner uses it for any query
  whose WHERE implies the condition (`status = 'waiting'` implies `status IN ('waiting', 'active')`). A
  full index elsewhere: SQLite uses a partial index only when the query repeats the condition's terms
  word for word, which the ORM's queries do not, so there it would never be used.
- `PostgresBrinIndex`: a BRIN index on PostgreSQL (a few pages, almost free to maintain, for a column
  that grows with the table, such as the journal's timestamps), a b-tree elsewhere.
"""

from django.db import models


class PostgresPartialIndex(models.Index):
    def _get_condition_sql(self, model, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return None
        return super()._get_condition_sql(model, schema_editor)


class PostgresBrinIndex(models.Index):
    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor == "postgresql":
            using = " USING brin"
        return super().create_sql(model, schema_editor, using=using, **kwargs)
