-- Reporting that cannot mislead (issue 13):
-- * dead latents on the training split (tokens since last fired, as the trainer counts them: the
--   last logged step's dead_frac) next to the held-out figure, which on a 2k-10k-token held-out set
--   reads 5-14x higher; each is named for what it measures.
-- * splice_results.note: why a ratio such as ce_recovered is NULL (zero-ablating the site changes
--   the loss by float32 noise only, where the ratio would read e.g. -734).

ALTER TABLE splice_results ADD COLUMN note VARCHAR;
COMMENT ON COLUMN splice_results.note IS 'why a recovered ratio is NULL, e.g. zero-ablation changes CE by less than 0.1% of the clean CE.';
COMMENT ON COLUMN splice_results.ce_recovered IS '(ce_zero - ce_sae) / (ce_zero - ce_clean); NULL when |ce_zero - ce_clean| < 0.1% of ce_clean (see note).';
COMMENT ON COLUMN eval_results.dead_frac IS 'share of latents that never fire on this eval set (held-out tokens: reads high on a small split).';

DROP VIEW run_metrics;
CREATE VIEW run_metrics AS
WITH own AS (
    SELECT e.run_id, e.fvu, e.r2, e.mse, e.cosine, e.l0, e.dead_frac
    FROM eval_results e JOIN runs r USING (run_id) WHERE e.eval_domain = r.train_domain
), xfer AS (
    SELECT e.run_id, avg(e.transfer_ratio) AS transfer_ratio
    FROM eval_results e JOIN runs r USING (run_id) WHERE e.eval_domain <> r.train_domain GROUP BY e.run_id
), concepts AS (
    SELECT run_id,
           avg(CASE WHEN f1 >= 0.8 THEN 1.0 ELSE 0.0 END) AS concept_coverage,
           avg(CASE WHEN baseline_f1 >= 0.8 THEN 1.0 ELSE 0.0 END) AS concept_coverage_baseline,
           avg(probe_k1) AS probe_k1,
           avg(baseline_k1) AS probe_k1_baseline
    FROM concept_results WHERE status = 'evaluated' GROUP BY run_id
), train_dead AS (
    SELECT run_id, arg_max(value, step) AS dead_frac_train FROM step_metrics WHERE name = 'dead_frac' GROUP BY run_id
)
SELECT own.run_id, own.fvu, own.r2, own.mse, own.cosine, own.l0, own.dead_frac, train_dead.dead_frac_train, xfer.transfer_ratio,
       concepts.concept_coverage, concepts.concept_coverage_baseline, concepts.probe_k1, concepts.probe_k1_baseline
FROM own LEFT JOIN xfer USING (run_id) LEFT JOIN concepts USING (run_id) LEFT JOIN train_dead USING (run_id);

COMMENT ON VIEW run_metrics IS 'One row per evaluated run: in-domain metrics, the mean transfer ratio to the other domains, and the ground-truth concept summary.';
COMMENT ON COLUMN run_metrics.fvu IS 'FVU on the held-out tokens of the training domain (mean-centred).';
COMMENT ON COLUMN run_metrics.r2 IS '1 - fvu on the training domain.';
COMMENT ON COLUMN run_metrics.mse IS 'MSE on the training domain.';
COMMENT ON COLUMN run_metrics.cosine IS 'mean cos(x, x_hat) on the training domain.';
COMMENT ON COLUMN run_metrics.l0 IS 'mean active latents per token on the training domain.';
COMMENT ON COLUMN run_metrics.dead_frac IS 'dead (held-out): fraction of latents that never fired on the training domain''s held-out tokens (reads high on a small split).';
COMMENT ON COLUMN run_metrics.dead_frac_train IS 'dead (train): fraction of latents that had not fired in the last train.dead_after_tokens training tokens when training ended.';
COMMENT ON COLUMN run_metrics.transfer_ratio IS 'mean over the other domains of MSE(train A, eval B) / MSE(train A, eval A); NULL with one domain.';
COMMENT ON COLUMN run_metrics.concept_coverage IS 'Share of evaluated ground-truth concepts (concept_results) with a latent at held-out F1 >= 0.8; NULL before the run is analysed.';
COMMENT ON COLUMN run_metrics.concept_coverage_baseline IS 'The same share for the model''s own dimensions (concept_results.baseline_f1 >= 0.8).';
COMMENT ON COLUMN run_metrics.probe_k1 IS 'Mean over evaluated concepts of the held-out balanced accuracy of the 1-latent probe (concept_results.probe_k1).';
COMMENT ON COLUMN run_metrics.probe_k1_baseline IS 'The same for the 1-dimension probe on the model''s own activations (concept_results.baseline_k1).';
