-- Sweeps as a job queue: a sweep expands into jobs (one run = one SAE each), which workers claim.
CREATE TABLE sweeps (
    sweep_id    VARCHAR PRIMARY KEY,
    name        VARCHAR NOT NULL,
    method      VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,
    goal        VARCHAR NOT NULL CHECK (goal IN ('minimize', 'maximize')),
    run_cap     INTEGER,
    spec        JSON NOT NULL,
    n_jobs      INTEGER NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
COMMENT ON TABLE sweeps IS 'Sweeps launched from the CLI or the app: the spec, the metric to rank by and its goal.';
COMMENT ON COLUMN sweeps.method IS 'grid or random (W&B vocabulary).';
COMMENT ON COLUMN sweeps.metric IS 'Leaderboard metric: fvu, r2, mse, transfer_ratio, l0, dead_frac, score, overall, ...';
COMMENT ON COLUMN sweeps.run_cap IS 'Most jobs the sweep may enqueue (NULL: the whole grid).';

CREATE TABLE jobs (
    job_id          VARCHAR PRIMARY KEY,
    sweep_id        VARCHAR,
    seq             BIGINT NOT NULL,
    status          VARCHAR NOT NULL CHECK (status IN ('QUEUED', 'RUNNING', 'FINISHED', 'FAILED', 'KILLED')),
    spec            JSON NOT NULL,
    label           VARCHAR,
    worker_id       VARCHAR,
    attempts        INTEGER NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    enqueued_at     TIMESTAMP NOT NULL,
    claimed_at      TIMESTAMP,
    finished_at     TIMESTAMP,
    phase           VARCHAR,
    step            INTEGER,
    total_steps     INTEGER,
    loss            DOUBLE,
    fvu             DOUBLE,
    dead_frac       DOUBLE,
    eta_seconds     DOUBLE,
    progress_at     TIMESTAMP,
    error           VARCHAR
);
COMMENT ON TABLE jobs IS 'The work queue: one job per run; job_id equals the run_id it produces.';
COMMENT ON COLUMN jobs.seq IS 'Queue order (lower first).';
COMMENT ON COLUMN jobs.status IS 'QUEUED, RUNNING, FINISHED, FAILED or KILLED. A RUNNING job whose worker stopped beating is shown as INTERRUPTED and requeued when a worker starts.';
COMMENT ON COLUMN jobs.attempts IS 'How many times a worker claimed the job (more than 1: resumed after an interruption).';
COMMENT ON COLUMN jobs.cancel_requested IS 'Set by a cancel request; the worker stops at the next step and marks the job KILLED.';
COMMENT ON COLUMN jobs.phase IS 'collect, train, eval or analyze.';
COMMENT ON COLUMN jobs.eta_seconds IS 'Estimated seconds left in the training phase.';

CREATE TABLE workers (
    worker_id     VARCHAR PRIMARY KEY,
    host          VARCHAR NOT NULL,
    pid           INTEGER NOT NULL,
    proc_started  DOUBLE,
    started_at    TIMESTAMP NOT NULL,
    heartbeat_at  TIMESTAMP NOT NULL,
    stopped_at    TIMESTAMP,
    current_job   VARCHAR
);
COMMENT ON TABLE workers IS 'Worker processes and their heartbeats (a thread beats every few seconds).';
COMMENT ON COLUMN workers.proc_started IS 'Process start time (epoch s), to tell a live worker from a recycled pid.';

ALTER TABLE runs ADD COLUMN sweep_id VARCHAR;
COMMENT ON COLUMN runs.sweep_id IS 'The sweep that produced the run, if any.';
