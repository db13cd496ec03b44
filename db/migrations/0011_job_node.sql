-- Where a job ran when it ran on a Ray cluster (issue 18): the node's id, written by the Ray driver
-- when the job's task starts (and again when Ray retries it elsewhere). NULL for local workers.
ALTER TABLE jobs ADD COLUMN node VARCHAR;
COMMENT ON COLUMN jobs.node IS 'Ray node id the job''s task last started on (ray backend); NULL for jobs run by local workers.';
