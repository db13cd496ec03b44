-- Runs: one trained SAE each. Runs that share a configuration and differ only in training domain
-- share a group_id; their eval rows form the N x N transfer matrix.
CREATE TABLE runs (
    run_id        VARCHAR PRIMARY KEY,
    group_id      VARCHAR NOT NULL,
    name          VARCHAR,
    status        VARCHAR NOT NULL CHECK (status IN ('RUNNING', 'FINISHED', 'FAILED', 'KILLED')),
    created_at    TIMESTAMP NOT NULL,
    started_at    TIMESTAMP,
    ended_at      TIMESTAMP,
    heartbeat_at  TIMESTAMP,
    model         VARCHAR NOT NULL,
    hook          VARCHAR NOT NULL,
    layer         INTEGER NOT NULL,
    architecture  VARCHAR NOT NULL,
    d_in          INTEGER NOT NULL,
    d_sae         INTEGER NOT NULL,
    k             INTEGER NOT NULL,
    train_domain  VARCHAR NOT NULL,
    domains       VARCHAR[] NOT NULL,
    seed          INTEGER NOT NULL,
    tokens_per_domain BIGINT NOT NULL,
    config        JSON NOT NULL,
    code_version  VARCHAR NOT NULL,
    device        VARCHAR,
    artifact_dir  VARCHAR,
    error         VARCHAR,
    tags          VARCHAR[] DEFAULT [],
    notes         VARCHAR DEFAULT ''
);
COMMENT ON TABLE runs IS 'One row per trained SAE (a run): its configuration, status and timing.';
COMMENT ON COLUMN runs.run_id IS 'Unique run id, also the folder name under lab_data/runs/.';
COMMENT ON COLUMN runs.group_id IS 'Runs with the same configuration that differ only in train_domain share this id.';
COMMENT ON COLUMN runs.status IS 'RUNNING, FINISHED, FAILED or KILLED (MLflow vocabulary).';
COMMENT ON COLUMN runs.heartbeat_at IS 'Last sign of life from the process training this run.';
COMMENT ON COLUMN runs.hook IS 'Hook point: mlp_out, resid_post or attn_out.';
COMMENT ON COLUMN runs.architecture IS 'topk, batchtopk or relu (ReLU + L1 baseline).';
COMMENT ON COLUMN runs.k IS 'Active latents per token (topk), on average (batchtopk), target L0 (relu).';
COMMENT ON COLUMN runs.train_domain IS 'Domain whose activations trained this SAE.';
COMMENT ON COLUMN runs.domains IS 'All domains of the experiment; the SAE is evaluated on each.';
COMMENT ON COLUMN runs.config IS 'The full resolved configuration the run used (JSON).';
COMMENT ON COLUMN runs.code_version IS 'git commit of the lab code that produced the run (+dirty).';
COMMENT ON COLUMN runs.tags IS 'Free tags a researcher attaches to a run.';
COMMENT ON COLUMN runs.notes IS 'Free notes about the run.';

CREATE TABLE step_metrics (
    run_id    VARCHAR NOT NULL,
    step      INTEGER NOT NULL,
    tokens    BIGINT NOT NULL,
    name      VARCHAR NOT NULL,
    value     DOUBLE,
    logged_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, step, name)
);
COMMENT ON TABLE step_metrics IS 'Training curves: one row per (run, step, metric name), long format.';
COMMENT ON COLUMN step_metrics.name IS 'loss, mse, aux_loss, fvu, l0, dead_frac, lr, tokens_per_s, ...';
COMMENT ON COLUMN step_metrics.tokens IS 'Training tokens (activation vectors) seen up to this step.';

CREATE TABLE eval_results (
    run_id         VARCHAR NOT NULL,
    eval_domain    VARCHAR NOT NULL,
    train_domain   VARCHAR NOT NULL,
    n_tokens       BIGINT NOT NULL,
    mse            DOUBLE,
    fvu            DOUBLE,
    r2             DOUBLE,
    cosine         DOUBLE,
    l0             DOUBLE,
    l1             DOUBLE,
    dead_frac      DOUBLE,
    l2_ratio       DOUBLE,
    transfer_ratio DOUBLE,
    evaluated_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, eval_domain)
);
COMMENT ON TABLE eval_results IS 'Held-out reconstruction of each SAE on each domain (the transfer matrix).';
COMMENT ON COLUMN eval_results.mse IS 'mean over tokens and dimensions of (x - x_hat)^2, in the model''s activation units.';
COMMENT ON COLUMN eval_results.fvu IS 'sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the eval set (mean-centred).';
COMMENT ON COLUMN eval_results.r2 IS '1 - fvu (explained variance).';
COMMENT ON COLUMN eval_results.cosine IS 'mean over tokens of cos(x, x_hat).';
COMMENT ON COLUMN eval_results.l0 IS 'mean number of active latents per token.';
COMMENT ON COLUMN eval_results.l1 IS 'mean sum of latent activations per token.';
COMMENT ON COLUMN eval_results.dead_frac IS 'share of latents that never fire on this eval set.';
COMMENT ON COLUMN eval_results.l2_ratio IS 'mean ||x_hat|| / ||x||.';
COMMENT ON COLUMN eval_results.transfer_ratio IS 'mse(train on A, eval on this domain) / mse(train on A, eval on A).';

CREATE TABLE splice_results (
    run_id          VARCHAR NOT NULL,
    eval_domain     VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,
    n_sequences     INTEGER NOT NULL,
    ce_clean        DOUBLE,
    ce_sae          DOUBLE,
    ce_zero         DOUBLE,
    ce_recovered    DOUBLE,
    kl_sae          DOUBLE,
    kl_zero         DOUBLE,
    emb_cos_sae     DOUBLE,
    emb_cos_zero    DOUBLE,
    emb_cos_recovered DOUBLE,
    evaluated_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, eval_domain)
);
COMMENT ON TABLE splice_results IS 'Model behaviour with the SAE reconstruction spliced in at the hook, vs clean and zero-ablated.';
COMMENT ON COLUMN splice_results.kind IS 'causal (next-token CE/KL) or encoder (pooled sentence-embedding cosine).';
COMMENT ON COLUMN splice_results.ce_recovered IS '(ce_zero - ce_sae) / (ce_zero - ce_clean).';
COMMENT ON COLUMN splice_results.kl_sae IS 'mean KL(clean || spliced) of next-token distributions.';
COMMENT ON COLUMN splice_results.emb_cos_sae IS 'mean cosine of pooled sentence embeddings, clean vs spliced.';
COMMENT ON COLUMN splice_results.emb_cos_recovered IS '(emb_cos_sae - emb_cos_zero) / (1 - emb_cos_zero).';

CREATE TABLE quality_scores (
    run_id                  VARCHAR PRIMARY KEY,
    reconstruction_points   DOUBLE NOT NULL,
    sparsity_points         DOUBLE NOT NULL,
    interpretability_points DOUBLE NOT NULL,
    score                   DOUBLE NOT NULL,
    rating                  VARCHAR NOT NULL,
    details                 JSON,
    scored_at               TIMESTAMP NOT NULL
);
COMMENT ON TABLE quality_scores IS 'The 0-5 quality score of the evaluation guide: reconstruction 0-2 + sparsity 0-2 + interpretability 0-1.';
COMMENT ON COLUMN quality_scores.rating IS 'Excellent >= 4.5, Good >= 3.5, Fair >= 2.5, else Poor.';
COMMENT ON COLUMN quality_scores.details IS 'The band each metric fell in and the value that put it there.';

CREATE TABLE artifacts (
    run_id     VARCHAR NOT NULL,
    name       VARCHAR NOT NULL,
    kind       VARCHAR NOT NULL,
    path       VARCHAR NOT NULL,
    bytes      BIGINT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, name)
);
COMMENT ON TABLE artifacts IS 'Files a run produced (SAE weights in SAELens layout, checkpoints); paths relative to the lab folder.';

CREATE TABLE activation_sets (
    key        VARCHAR PRIMARY KEY,
    model      VARCHAR NOT NULL,
    domain     VARCHAR NOT NULL,
    source     VARCHAR NOT NULL,
    n_tokens   BIGINT NOT NULL,
    n_sequences INTEGER NOT NULL,
    seq_len    INTEGER NOT NULL,
    seed       INTEGER NOT NULL,
    hooks      VARCHAR[] NOT NULL,
    path       VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
COMMENT ON TABLE activation_sets IS 'Cached activations on disk (float16), keyed by model, domain spec, budget, sequence length and seed.';
COMMENT ON COLUMN activation_sets.hooks IS 'hook@layer entries stored in this set, e.g. mlp_out@2.';
