-- The process that is running a run, so a RUNNING run whose process is gone (killed, crashed, or
-- stopped by a full disk before it could record its end) can be told from one still at work: the
-- next command that writes to the lab marks it FAILED, and `python -m engine runs mark-failed`
-- refuses a run whose process is alive.
ALTER TABLE runs ADD COLUMN owner_host VARCHAR;
ALTER TABLE runs ADD COLUMN owner_pid INTEGER;
ALTER TABLE runs ADD COLUMN owner_started DOUBLE;
COMMENT ON COLUMN runs.owner_host IS 'Host name of the process that runs (or ran) this run; NULL for runs recorded before migration 7.';
COMMENT ON COLUMN runs.owner_pid IS 'Process id of that process on owner_host.';
COMMENT ON COLUMN runs.owner_started IS 'That process''s start time (epoch s), to tell it from a later process that reused the pid.';
