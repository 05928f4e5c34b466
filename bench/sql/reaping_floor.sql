-- What PostgreSQL alone needs for the reaping of 100,000 sessions on this machine (docs/performance.md):
-- DELETE them from a narrow table with the session table's indexes, and INSERT 100,000 rows into a table
-- with the journal's indexes, in one statement; no Django, no Python. Rolled back; the tables are dropped.
-- The indexes are the schema's (lab_sessions 0003, audit 0006): the queue's three hold live sessions only.
-- `-v old=1` runs it as before: the indexes then (all full b-trees, worker and owner indexed) and the
-- reaped rows kept (an UPDATE, then the INSERT ... SELECT), to compare side by side.
--   psql -h 127.0.0.1 -U postgres -d postgres -f bench/sql/reaping_floor.sql
\timing on
DROP TABLE IF EXISTS lm_floor_sessions, lm_floor_journal;
CREATE TABLE lm_floor_sessions (id uuid PRIMARY KEY, pool int, ticket bigint, status varchar(10), position int,
  last_seen timestamptz, ended timestamptz, reason varchar(20), owner int, worker int);
INSERT INTO lm_floor_sessions SELECT gen_random_uuid(), 2, g, 'waiting', g, now() - interval '1 hour', NULL, '',
  NULL, NULL FROM generate_series(1, 100000) g;
\if :{?old}
CREATE INDEX ON lm_floor_sessions (pool, status, position);
CREATE INDEX ON lm_floor_sessions (status, last_seen);
CREATE UNIQUE INDEX ON lm_floor_sessions (pool, ticket);
CREATE INDEX ON lm_floor_sessions (owner);
CREATE INDEX ON lm_floor_sessions (worker);
\else
CREATE INDEX ON lm_floor_sessions (pool, status, position) WHERE status IN ('waiting', 'active');
CREATE INDEX ON lm_floor_sessions (status, last_seen) WHERE status IN ('waiting', 'active');
CREATE UNIQUE INDEX ON lm_floor_sessions (pool, ticket) WHERE status IN ('waiting', 'active');
\endif
CREATE INDEX ON lm_floor_sessions (ended);
CREATE UNIQUE INDEX ON lm_floor_sessions (worker) WHERE status = 'active';
CREATE TABLE lm_floor_journal (id bigserial PRIMARY KEY, ts timestamptz, event_type varchar(100), user_id varchar(150),
  resource_type varchar(50), resource_id varchar(64), seq bigint UNIQUE, metadata jsonb);
\if :{?old}
CREATE INDEX ON lm_floor_journal (ts);
\else
CREATE INDEX ON lm_floor_journal USING brin (ts);
\endif
CREATE INDEX ON lm_floor_journal (event_type);
CREATE INDEX ON lm_floor_journal (user_id);
CREATE INDEX ON lm_floor_journal (resource_type, resource_id);
CREATE INDEX ON lm_floor_journal (id) WHERE seq IS NULL;
ANALYZE lm_floor_sessions;
BEGIN;
\if :{?old}
-- before: the reap UPDATE (status, ended, reason) ...
UPDATE lm_floor_sessions SET status = 'reaped', ended = now(), reason = 'stale'
  WHERE pool = 2 AND status IN ('waiting', 'active') AND last_seen < now() - interval '10 minutes';
-- ... then the journal's INSERT ... SELECT, one row per reaped session
INSERT INTO lm_floor_journal (ts, event_type, user_id, resource_type, resource_id, metadata)
  SELECT now(), 'session.reaped', NULL, 'session', id::text, jsonb_build_object('pool', 'bench', 'from', 'waiting')
  FROM lm_floor_sessions WHERE ended IS NOT NULL ORDER BY id;
\else
-- now: one statement, the journal's INSERT ... SELECT reading the rows the DELETE returns
WITH lm_floor_sessions AS (DELETE FROM lm_floor_sessions
  WHERE pool = 2 AND status IN ('waiting', 'active') AND last_seen < now() - interval '10 minutes' RETURNING *)
INSERT INTO lm_floor_journal (ts, event_type, user_id, resource_type, resource_id, metadata)
  SELECT now(), 'session.reaped', NULL, 'session', id::text, jsonb_build_object('pool', 'bench', 'from', 'waiting')
  FROM lm_floor_sessions ORDER BY id;
\endif
ROLLBACK;
DROP TABLE lm_floor_sessions, lm_floor_journal;
