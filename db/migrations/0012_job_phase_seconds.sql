-- Where a job's time went (issue 17): seconds per phase, written when the job ends. Jobs trained
-- together in one pass over shared batches (a share group) each count only their own steps.
ALTER TABLE jobs ADD COLUMN phase_seconds JSON;
ALTER TABLE jobs ADD COLUMN share_group VARCHAR;
COMMENT ON COLUMN jobs.phase_seconds IS 'Seconds the job spent per phase: collect, train, eval, analyze, database (JSON); NULL until it ends or where not measured.';
COMMENT ON COLUMN jobs.share_group IS 'Jobs claimed together to train in one pass over the same batches share this id (the first job''s id); NULL for a job trained alone.';
