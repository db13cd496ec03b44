-- Interpretability one can measure (issue 14): per run, how well the SAE's latents recover
-- ground-truth token concepts read from the text itself (engine/analysis/concepts), and an
-- interval on every automatic label's detection score so a label at chance says so.
-- concept_results is part of a run's analysis: replaced with it in one transaction.

CREATE TABLE concept_results (
    run_id            VARCHAR NOT NULL,
    concept           VARCHAR NOT NULL,
    kind              VARCHAR NOT NULL,
    origin            VARCHAR NOT NULL,
    description       VARCHAR,
    domains           VARCHAR[] NOT NULL,
    status            VARCHAR NOT NULL,
    n_train_pos       BIGINT NOT NULL,
    n_val_pos         BIGINT NOT NULL,
    n_val             BIGINT NOT NULL,
    best_latent       INTEGER,
    threshold         DOUBLE,
    train_auroc       DOUBLE,
    auroc             DOUBLE,
    "precision"       DOUBLE,
    recall            DOUBLE,
    f1                DOUBLE,
    top_latents       INTEGER[],
    probe_k1          DOUBLE,
    probe_k2          DOUBLE,
    probe_k5          DOUBLE,
    baseline_k1       DOUBLE,
    baseline_k2       DOUBLE,
    baseline_k5       DOUBLE,
    baseline_dim      INTEGER,
    baseline_f1       DOUBLE,
    full_probe_recall DOUBLE,
    latents_to_90     INTEGER,
    PRIMARY KEY (run_id, concept)
);
COMMENT ON TABLE concept_results IS 'One row per (analysed run, ground-truth concept): the best single latent for the concept, k-sparse probes on the latents against the same probes on the model''s own dimensions, all on held-out tokens. Concepts come from the text (Python tokenize/ast for code, punctuation for prose, researcher-registered regexes and functions).';
COMMENT ON COLUMN concept_results.run_id IS 'The analysed run (runs.run_id).';
COMMENT ON COLUMN concept_results.concept IS 'Concept name, e.g. kw:def, def-name, attribute, call, number, prose:backticked, shared:code-name.';
COMMENT ON COLUMN concept_results.kind IS 'The domains the concept applies to: code (Python source domains), prose (the others) or any.';
COMMENT ON COLUMN concept_results.origin IS 'builtin, regex or function (registered by a researcher).';
COMMENT ON COLUMN concept_results.description IS 'What the concept marks, in words.';
COMMENT ON COLUMN concept_results.domains IS 'The run''s domains the concept was evaluated on (held-out rows pooled).';
COMMENT ON COLUMN concept_results.status IS 'evaluated; too few held-out positives (fewer than 20: no metric is computed); no text (the domain''s text could not be rebuilt); or no domain of its kind (a code concept in a run without a code domain).';
COMMENT ON COLUMN concept_results.n_train_pos IS 'Training-split tokens that carry the concept.';
COMMENT ON COLUMN concept_results.n_val_pos IS 'Held-out tokens that carry the concept (at least 20 to be evaluated).';
COMMENT ON COLUMN concept_results.n_val IS 'Held-out tokens on which the concept is decided (its domains, text rebuilt, document parsed where the concept needs it).';
COMMENT ON COLUMN concept_results.best_latent IS 'The latent with the largest AUROC for the concept on the training split (activation as the score, 0 where it does not fire).';
COMMENT ON COLUMN concept_results.threshold IS 'Activation threshold of best_latent that maximised F1 on the training split; the latent predicts the concept where activation >= threshold.';
COMMENT ON COLUMN concept_results.train_auroc IS 'AUROC of best_latent on the training split (where it was chosen; optimistic).';
COMMENT ON COLUMN concept_results.auroc IS 'AUROC of best_latent on held-out tokens (ties counted half; equals sklearn roc_auc_score).';
COMMENT ON COLUMN concept_results."precision" IS 'Held-out precision of activation >= threshold: share of predicted tokens that carry the concept.';
COMMENT ON COLUMN concept_results.recall IS 'Held-out recall of activation >= threshold: share of concept tokens predicted.';
COMMENT ON COLUMN concept_results.f1 IS 'Held-out F1 = 2PR / (P + R) of best_latent at threshold; a concept is covered when f1 >= 0.8.';
COMMENT ON COLUMN concept_results.top_latents IS 'The 5 latents of largest |mean activation on concept tokens - mean elsewhere| on the training split (the k-sparse probe ranking), best first.';
COMMENT ON COLUMN concept_results.probe_k1 IS 'Held-out balanced accuracy of a logistic probe (L2, C = 1, class-balanced, standardised inputs) on the top 1 latent of the ranking (SAEBench k-sparse probing).';
COMMENT ON COLUMN concept_results.probe_k2 IS 'The same on the top 2 latents.';
COMMENT ON COLUMN concept_results.probe_k5 IS 'The same on the top 5 latents.';
COMMENT ON COLUMN concept_results.baseline_k1 IS 'Baseline: the same probe on the top 1 of the model''s own activation dimensions (the SAE''s input), ranked the same way.';
COMMENT ON COLUMN concept_results.baseline_k2 IS 'Baseline probe on the top 2 model dimensions.';
COMMENT ON COLUMN concept_results.baseline_k5 IS 'Baseline probe on the top 5 model dimensions.';
COMMENT ON COLUMN concept_results.baseline_dim IS 'The model dimension (of the 8 with the largest mean difference, either sign) with the best training AUROC.';
COMMENT ON COLUMN concept_results.baseline_f1 IS 'Held-out F1 of baseline_dim at its training-chosen threshold: the model''s own single-dimension coverage.';
COMMENT ON COLUMN concept_results.full_probe_recall IS 'Held-out recall of the probe on the top 64 latents (the full probe).';
COMMENT ON COLUMN concept_results.latents_to_90 IS 'Smallest k in 1, 2, 5, 10, 20, 64 whose top-k probe reaches 90% of the full probe''s held-out recall: 1 when one latent carries the concept, more when it is split across latents (a feature-splitting / absorption proxy). NULL when the full probe recalls nothing.';

ALTER TABLE features ADD COLUMN label_chance DOUBLE;
ALTER TABLE features ADD COLUMN label_score_low DOUBLE;
ALTER TABLE features ADD COLUMN label_score_high DOUBLE;
ALTER TABLE features ADD COLUMN label_reliable BOOLEAN;
COMMENT ON COLUMN features.label_chance IS 'Chance level of label_score: 0.5 (balanced accuracy of a rule that ignores the text).';
COMMENT ON COLUMN features.label_score_low IS 'Lower end of the 95% interval of label_score on held-out text: Wilson intervals of the true-positive and true-negative rates, combined for their mean by the MOVER method (Zou & Donner 2008).';
COMMENT ON COLUMN features.label_score_high IS 'Upper end of the same 95% interval.';
COMMENT ON COLUMN features.label_reliable IS 'True when label_score_low >= 0.6 (chance 0.5 plus a 0.1 margin): only then is the label shown as the feature''s title; otherwise it reads "no reliable label (best guess: ...)". NULL for analyses older than this column.';

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
)
SELECT own.run_id, own.fvu, own.r2, own.mse, own.cosine, own.l0, own.dead_frac, xfer.transfer_ratio,
       concepts.concept_coverage, concepts.concept_coverage_baseline, concepts.probe_k1, concepts.probe_k1_baseline
FROM own LEFT JOIN xfer USING (run_id) LEFT JOIN concepts USING (run_id);

COMMENT ON VIEW run_metrics IS 'One row per evaluated run: in-domain metrics, the mean transfer ratio to the other domains, and the ground-truth concept summary.';
COMMENT ON COLUMN run_metrics.fvu IS 'FVU on the held-out tokens of the training domain (mean-centred).';
COMMENT ON COLUMN run_metrics.r2 IS '1 - fvu on the training domain.';
COMMENT ON COLUMN run_metrics.mse IS 'MSE on the training domain.';
COMMENT ON COLUMN run_metrics.cosine IS 'mean cos(x, x_hat) on the training domain.';
COMMENT ON COLUMN run_metrics.l0 IS 'mean active latents per token on the training domain.';
COMMENT ON COLUMN run_metrics.dead_frac IS 'fraction of latents that never fired on the training domain''s held-out tokens.';
COMMENT ON COLUMN run_metrics.transfer_ratio IS 'mean over the other domains of MSE(train A, eval B) / MSE(train A, eval A); NULL with one domain.';
COMMENT ON COLUMN run_metrics.concept_coverage IS 'Share of evaluated ground-truth concepts (concept_results) with a latent at held-out F1 >= 0.8; NULL before the run is analysed.';
COMMENT ON COLUMN run_metrics.concept_coverage_baseline IS 'The same share for the model''s own dimensions (concept_results.baseline_f1 >= 0.8).';
COMMENT ON COLUMN run_metrics.probe_k1 IS 'Mean over evaluated concepts of the held-out balanced accuracy of the 1-latent probe (concept_results.probe_k1).';
COMMENT ON COLUMN run_metrics.probe_k1_baseline IS 'The same for the 1-dimension probe on the model''s own activations (concept_results.baseline_k1).';
