-- One row per run with its headline numbers: the in-domain evaluation (trained and evaluated on
-- the same domain) and the mean transfer ratio over the other domains. Every listing of runs (the
-- app's run table, the sweep leaderboard) and a researcher's own SQL read it instead of repeating
-- the two joins.

CREATE VIEW run_metrics AS
WITH own AS (
    SELECT e.run_id, e.fvu, e.r2, e.mse, e.cosine, e.l0, e.dead_frac
    FROM eval_results e JOIN runs r USING (run_id) WHERE e.eval_domain = r.train_domain
), xfer AS (
    SELECT e.run_id, avg(e.transfer_ratio) AS transfer_ratio
    FROM eval_results e JOIN runs r USING (run_id) WHERE e.eval_domain <> r.train_domain GROUP BY e.run_id
)
SELECT own.run_id, own.fvu, own.r2, own.mse, own.cosine, own.l0, own.dead_frac, xfer.transfer_ratio
FROM own LEFT JOIN xfer USING (run_id);

COMMENT ON VIEW run_metrics IS 'One row per evaluated run: in-domain metrics and the mean transfer ratio to the other domains.';
COMMENT ON COLUMN run_metrics.fvu IS 'FVU on the held-out tokens of the training domain (mean-centred).';
COMMENT ON COLUMN run_metrics.r2 IS '1 - fvu on the training domain.';
COMMENT ON COLUMN run_metrics.mse IS 'MSE on the training domain.';
COMMENT ON COLUMN run_metrics.cosine IS 'mean cos(x, x_hat) on the training domain.';
COMMENT ON COLUMN run_metrics.l0 IS 'mean active latents per token on the training domain.';
COMMENT ON COLUMN run_metrics.dead_frac IS 'fraction of latents that never fired on the training domain''s held-out tokens.';
COMMENT ON COLUMN run_metrics.transfer_ratio IS 'mean over the other domains of MSE(train A, eval B) / MSE(train A, eval A); NULL with one domain.';
