-- Feature analysis (engine/analysis): what each SAE feature does, read by the concept map, the
-- inspector, the text probe and the findings. One analysis per run; re-analysing a run deletes
-- and re-inserts all of its rows in one transaction, so a reader never sees half an analysis.
-- Contexts keep their token strings once per sequence (token_sequences), not once per window:
-- windows overlap and every run of a sweep shares the same activation sets.
-- Rows are inserted sorted by (run_id, feature, ...): DuckDB's zone maps then let the inspector's
-- point queries skip every row group but the one holding the feature.

CREATE TABLE analysis_runs (
    run_id        VARCHAR PRIMARY KEY,
    domains       VARCHAR[] NOT NULL,
    d_sae         INTEGER NOT NULL,
    n_live        INTEGER NOT NULL,
    n_dead        INTEGER NOT NULL,
    settings      JSON NOT NULL,
    timings       JSON,
    seconds       DOUBLE NOT NULL,
    code_version  VARCHAR,
    created_at    TIMESTAMP NOT NULL
);
COMMENT ON TABLE analysis_runs IS 'One row per analysed run: the settings used, how long it took, and when. Its presence means the feature tables hold a complete analysis of the run.';
COMMENT ON COLUMN analysis_runs.run_id IS 'The analysed run (runs.run_id).';
COMMENT ON COLUMN analysis_runs.domains IS 'Domains whose activations were analysed, in the order of the experiment config.';
COMMENT ON COLUMN analysis_runs.d_sae IS 'Number of features of the SAE.';
COMMENT ON COLUMN analysis_runs.n_live IS 'Features that fire at least once on any domain.';
COMMENT ON COLUMN analysis_runs.n_dead IS 'Features that never fire on any token of any domain.';
COMMENT ON COLUMN analysis_runs.settings IS 'The AnalysisConfig used (JSON): context counts, thresholds, map and label settings, seed.';
COMMENT ON COLUMN analysis_runs.timings IS 'Seconds spent in each stage of the analysis (JSON).';
COMMENT ON COLUMN analysis_runs.seconds IS 'Wall-clock seconds of the whole analysis, including the database write.';
COMMENT ON COLUMN analysis_runs.code_version IS 'git commit of the lab code that produced the analysis (+dirty).';
COMMENT ON COLUMN analysis_runs.created_at IS 'When the analysis was written (UTC).';

CREATE TABLE features (
    run_id         VARCHAR NOT NULL,
    feature        INTEGER NOT NULL,
    dead           BOOLEAN NOT NULL,
    class          VARCHAR NOT NULL,
    leaning_domain VARCHAR,
    n_fires        BIGINT NOT NULL,
    freq           DOUBLE NOT NULL,
    mean_act       DOUBLE,
    max_act        DOUBLE NOT NULL,
    hist_max       DOUBLE,
    label          VARCHAR,
    label_kind     VARCHAR,
    label_tokens   VARCHAR[],
    label_token_ids INTEGER[],
    label_score    DOUBLE,
    label_precision DOUBLE,
    label_recall   DOUBLE,
    label_train_score DOUBLE,
    map_x          DOUBLE,
    map_y          DOUBLE,
    map_z          DOUBLE,
    tsne_x         DOUBLE,
    tsne_y         DOUBLE,
    tsne3_x        DOUBLE,
    tsne3_y        DOUBLE,
    tsne3_z        DOUBLE,
    cluster        INTEGER,
    PRIMARY KEY (run_id, feature)
);
COMMENT ON TABLE features IS 'One row per SAE feature of an analysed run: class, automatic label with its detection score, concept-map position and cluster.';
COMMENT ON COLUMN features.run_id IS 'The analysed run (runs.run_id).';
COMMENT ON COLUMN features.feature IS 'Feature (latent) index, 0 to d_sae - 1.';
COMMENT ON COLUMN features.dead IS 'True when the feature fires (activation > 0) on no token of any domain.';
COMMENT ON COLUMN features.class IS '<domain>-leaning when s = (freq_d - freq_rest) / (freq_d + freq_rest) >= the class threshold (settings.class_threshold, default 0.5: fires at least 3x as often on that domain as on the others), shared otherwise, dead when it never fires.';
COMMENT ON COLUMN features.leaning_domain IS 'The domain the feature leans to (NULL when shared or dead).';
COMMENT ON COLUMN features.n_fires IS 'Tokens, over all domains, on which the feature fires.';
COMMENT ON COLUMN features.freq IS 'Firing frequency over all domains: n_fires / tokens.';
COMMENT ON COLUMN features.mean_act IS 'Mean activation over the tokens where the feature fires (all domains).';
COMMENT ON COLUMN features.max_act IS 'Largest activation over all domains (0 when dead).';
COMMENT ON COLUMN features.hist_max IS 'Upper edge of the activation histograms in feature_domain_stats: bins are equal-width on (0, hist_max], shared by all domains.';
COMMENT ON COLUMN features.label IS 'Automatic label: the tokens (or preceding tokens) most over-represented where the feature fires, e.g. "def, class" or "after: import".';
COMMENT ON COLUMN features.label_kind IS 'token (the label names the token the feature fires on) or previous token (the token just before it).';
COMMENT ON COLUMN features.label_tokens IS 'The label''s tokens as the tokenizer spells them.';
COMMENT ON COLUMN features.label_token_ids IS 'The label''s token ids (-1 stands for the start of a sequence, a previous-token label only).';
COMMENT ON COLUMN features.label_score IS 'Detection score: balanced accuracy of "a label token is at (or just before) this position" predicting "the feature fires", on the held-out 10% of every domain pooled. 0.5 is chance, 1 perfect.';
COMMENT ON COLUMN features.label_precision IS 'Held-out share of label-predicted positions where the feature fires.';
COMMENT ON COLUMN features.label_recall IS 'Held-out share of firing positions that the label predicts.';
COMMENT ON COLUMN features.label_train_score IS 'The same balanced accuracy on the training rows the label was chosen on (optimistic; compare with label_score).';
COMMENT ON COLUMN features.map_x IS 'Concept map, PCA component 1 of the feature vector (decoder row + selectivity statistics); NULL for dead features.';
COMMENT ON COLUMN features.map_y IS 'Concept map, PCA component 2 (the 2D map is (map_x, map_y)).';
COMMENT ON COLUMN features.map_z IS 'Concept map, PCA component 3 (the 3D map is (map_x, map_y, map_z)).';
COMMENT ON COLUMN features.tsne_x IS '2D t-SNE of the same feature vectors (only when the analysis ran with t-SNE), x.';
COMMENT ON COLUMN features.tsne_y IS '2D t-SNE, y.';
COMMENT ON COLUMN features.tsne3_x IS '3D t-SNE (only with t-SNE), x.';
COMMENT ON COLUMN features.tsne3_y IS '3D t-SNE, y.';
COMMENT ON COLUMN features.tsne3_z IS '3D t-SNE, z.';
COMMENT ON COLUMN features.cluster IS 'k-means cluster (clusters.cluster) of the PCA-reduced feature vector; NULL for dead features.';

CREATE TABLE feature_domain_stats (
    run_id          VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    domain          VARCHAR NOT NULL,
    n_tokens        BIGINT NOT NULL,
    n_fires         BIGINT NOT NULL,
    freq            DOUBLE NOT NULL,
    mean_act        DOUBLE,
    max_act         DOUBLE NOT NULL,
    freq_sel        DOUBLE,
    mag_sel         DOUBLE,
    selectivity     DOUBLE,
    hist_counts     INTEGER[] NOT NULL,
    detection_score DOUBLE,
    val_fires       BIGINT NOT NULL,
    PRIMARY KEY (run_id, feature, domain)
);
COMMENT ON TABLE feature_domain_stats IS 'Per feature and domain: firing frequency, activation statistics, histogram, selectivity against the other domains, and the label''s detection score there.';
COMMENT ON COLUMN feature_domain_stats.run_id IS 'The analysed run (runs.run_id).';
COMMENT ON COLUMN feature_domain_stats.feature IS 'Feature index (features.feature).';
COMMENT ON COLUMN feature_domain_stats.domain IS 'One of the run''s domains (runs.domains).';
COMMENT ON COLUMN feature_domain_stats.n_tokens IS 'Tokens (activation rows, special tokens excluded) of this domain, train and held-out.';
COMMENT ON COLUMN feature_domain_stats.n_fires IS 'Tokens of this domain where the feature fires (activation > 0).';
COMMENT ON COLUMN feature_domain_stats.freq IS 'Firing frequency on this domain: n_fires / n_tokens (freqA in the seeds).';
COMMENT ON COLUMN feature_domain_stats.mean_act IS 'Mean activation over the tokens of this domain where it fires (magA in the seeds); NULL when it never fires here.';
COMMENT ON COLUMN feature_domain_stats.max_act IS 'Largest activation on this domain (0 when it never fires here).';
COMMENT ON COLUMN feature_domain_stats.freq_sel IS 'freq on this domain minus freq on all other domains pooled (freqA - freqB with two domains); NULL with one domain.';
COMMENT ON COLUMN feature_domain_stats.mag_sel IS 'mean_act on this domain minus mean_act on the other domains pooled (magA - magB), a missing side counting as 0; NULL with one domain.';
COMMENT ON COLUMN feature_domain_stats.selectivity IS 'Normalised (freq - freq_rest) / (freq + freq_rest) in [-1, 1], the quantity the class threshold applies to; NULL with one domain or when dead.';
COMMENT ON COLUMN feature_domain_stats.hist_counts IS 'Histogram of the non-zero activations on this domain: counts in equal-width bins over (0, features.hist_max].';
COMMENT ON COLUMN feature_domain_stats.detection_score IS 'Balanced accuracy of the feature''s label on the held-out rows of this domain; NULL when the feature never fires there (or has no label).';
COMMENT ON COLUMN feature_domain_stats.val_fires IS 'Held-out tokens of this domain where the feature fires (the positives the detection score is computed on).';

CREATE TABLE token_sequences (
    activation_set VARCHAR NOT NULL,
    seq            INTEGER NOT NULL,
    tokens         VARCHAR NOT NULL,
    PRIMARY KEY (activation_set, seq)
);
-- One string per sequence, tokens separated by U+001F (display strings never contain control
-- characters): a list of 128 short strings per row made every inspector query decompress all of
-- them (measured 22 ms against 13 ms for the same query on the joined text).
COMMENT ON TABLE token_sequences IS 'The token strings of every sequence of an activation set, stored once and shared by every run analysed on it (feature_contexts slices its windows from here).';
COMMENT ON COLUMN token_sequences.activation_set IS 'activation_sets.key of the cached activations the sequence belongs to.';
COMMENT ON COLUMN token_sequences.seq IS 'Sequence index in the set (row of its tokens.npy).';
COMMENT ON COLUMN token_sequences.tokens IS 'Every token of the sequence as the tokenizer spells it (special tokens included, WordPiece continuations start with ##), separated by chr(31): string_split(tokens, chr(31)) gives the list.';

CREATE TABLE feature_context_rows (
    run_id         VARCHAR NOT NULL,
    feature        INTEGER NOT NULL,
    domain         VARCHAR NOT NULL,
    kind           VARCHAR NOT NULL CHECK (kind IN ('top', 'quantile')),
    rank           INTEGER NOT NULL,
    quantile       SMALLINT,
    q_lower        FLOAT,
    q_upper        FLOAT,
    activation     FLOAT NOT NULL,
    activation_set VARCHAR NOT NULL,
    seq            INTEGER NOT NULL,
    pos            INTEGER NOT NULL,
    held_out       BOOLEAN NOT NULL,
    window_start   INTEGER NOT NULL,
    center         SMALLINT NOT NULL,
    acts           FLOAT[] NOT NULL
);
-- No PRIMARY KEY here, deliberately: (run_id, feature, domain, kind, rank) is unique by
-- construction (a run's rows are only ever deleted and re-inserted together, in one transaction),
-- and maintaining an index over ~250k rows per run cost 2 s of every re-analysis (measured).
COMMENT ON TABLE feature_context_rows IS 'Storage of feature_contexts: the same rows with the window''s position in its sequence instead of its token strings (read feature_contexts instead). (run_id, feature, domain, kind, rank) is unique.';
COMMENT ON COLUMN feature_context_rows.activation_set IS 'activation_sets.key of the sequence (token_sequences holds its tokens).';
COMMENT ON COLUMN feature_context_rows.window_start IS 'Position in the sequence of the window''s first token.';
COMMENT ON COLUMN feature_context_rows.run_id IS 'The analysed run (runs.run_id).';
COMMENT ON COLUMN feature_context_rows.feature IS 'Feature index (features.feature).';
COMMENT ON COLUMN feature_context_rows.domain IS 'Domain whose text the context comes from.';
COMMENT ON COLUMN feature_context_rows.kind IS 'top (highest activations, rank 0 = highest) or quantile (random samples from one activation interval).';
COMMENT ON COLUMN feature_context_rows.rank IS 'Order within (feature, domain, kind); for quantile rows, quantile * group size + position within the group.';
COMMENT ON COLUMN feature_context_rows.quantile IS 'Interval index 0 (lowest) to n - 1 (highest) of (0, max_act] split into equal-width intervals; NULL for top rows.';
COMMENT ON COLUMN feature_context_rows.q_lower IS 'Lower bound of the interval the sample was drawn from (quantile rows).';
COMMENT ON COLUMN feature_context_rows.q_upper IS 'Upper bound of the interval (quantile rows).';
COMMENT ON COLUMN feature_context_rows.activation IS 'The feature''s activation on the centre token (= acts[center + 1], SQL lists being 1-based).';
COMMENT ON COLUMN feature_context_rows.seq IS 'Sequence index in the activation set (row of its tokens.npy, token_sequences.seq).';
COMMENT ON COLUMN feature_context_rows.pos IS 'Position of the centre token in that sequence.';
COMMENT ON COLUMN feature_context_rows.held_out IS 'True when the sequence is in the held-out 10% (not seen in training).';
COMMENT ON COLUMN feature_context_rows.center IS '0-based index of the activating token within the window (tokens / acts).';
COMMENT ON COLUMN feature_context_rows.acts IS 'The feature''s activation on each token of the window (0 where it does not fire, and on special tokens).';

CREATE VIEW feature_contexts AS
SELECT c.run_id, c.feature, c.domain, c.kind, c.rank, c.quantile, c.q_lower, c.q_upper, c.activation,
       c.seq, c.pos, c.held_out, c.center,
       string_split(s.tokens, chr(31))[c.window_start + 1 : c.window_start + len(c.acts)] AS tokens,
       c.acts, c.activation_set
FROM feature_context_rows c
JOIN token_sequences s ON s.activation_set = c.activation_set AND s.seq = c.seq;
COMMENT ON VIEW feature_contexts IS 'Example contexts per live feature and domain: the top activating tokens, and tokens sampled from equal-width activation intervals (sae_vis quantile groups), each with a +-10 token window and the feature''s activation on every token of it, for highlighting.';
COMMENT ON COLUMN feature_contexts.run_id IS 'The analysed run (runs.run_id).';
COMMENT ON COLUMN feature_contexts.feature IS 'Feature index (features.feature).';
COMMENT ON COLUMN feature_contexts.domain IS 'Domain whose text the context comes from.';
COMMENT ON COLUMN feature_contexts.kind IS 'top (highest activations, rank 0 = highest) or quantile (random samples from one activation interval).';
COMMENT ON COLUMN feature_contexts.rank IS 'Order within (feature, domain, kind); for quantile rows, quantile * group size + position within the group.';
COMMENT ON COLUMN feature_contexts.quantile IS 'Interval index 0 (lowest) to n - 1 (highest) of (0, max_act] split into equal-width intervals; NULL for top rows.';
COMMENT ON COLUMN feature_contexts.q_lower IS 'Lower bound of the interval the sample was drawn from (quantile rows).';
COMMENT ON COLUMN feature_contexts.q_upper IS 'Upper bound of the interval (quantile rows).';
COMMENT ON COLUMN feature_contexts.activation IS 'The feature''s activation on the centre token (= acts[center + 1], SQL lists being 1-based).';
COMMENT ON COLUMN feature_contexts.seq IS 'Sequence index in the activation set (row of its tokens.npy, token_sequences.seq).';
COMMENT ON COLUMN feature_contexts.pos IS 'Position of the centre token in that sequence.';
COMMENT ON COLUMN feature_contexts.held_out IS 'True when the sequence is in the held-out 10% (not seen in training).';
COMMENT ON COLUMN feature_contexts.center IS '0-based index of the activating token within the window (tokens / acts).';
COMMENT ON COLUMN feature_contexts.acts IS 'The feature''s activation on each token of the window (0 where it does not fire, and on special tokens).';
COMMENT ON COLUMN feature_contexts.tokens IS 'The window: +-10 tokens around the centre, clipped to the sequence, as the tokenizer spells them (WordPiece continuations start with ##).';
COMMENT ON COLUMN feature_contexts.activation_set IS 'activation_sets.key of the sequence.';

CREATE TABLE feature_neighbours (
    run_id    VARCHAR NOT NULL,
    feature   INTEGER NOT NULL,
    kind      VARCHAR NOT NULL CHECK (kind IN ('decoder', 'activation')),
    rank      INTEGER NOT NULL,
    neighbour INTEGER NOT NULL,
    score     DOUBLE NOT NULL,
    PRIMARY KEY (run_id, feature, kind, rank)
);
COMMENT ON TABLE feature_neighbours IS 'Nearest features of every feature: by decoder-direction cosine, and by Pearson correlation of activations over all tokens of all domains (live features only).';
COMMENT ON COLUMN feature_neighbours.run_id IS 'The analysed run (runs.run_id).';
COMMENT ON COLUMN feature_neighbours.feature IS 'Feature index (features.feature).';
COMMENT ON COLUMN feature_neighbours.kind IS 'decoder (cosine of decoder rows) or activation (correlation of activations).';
COMMENT ON COLUMN feature_neighbours.rank IS '0 = nearest.';
COMMENT ON COLUMN feature_neighbours.neighbour IS 'The neighbouring feature index.';
COMMENT ON COLUMN feature_neighbours.score IS 'Decoder cosine, or activation correlation.';

CREATE TABLE feature_token_effects (
    run_id    VARCHAR NOT NULL,
    feature   INTEGER NOT NULL,
    direction VARCHAR NOT NULL CHECK (direction IN ('up', 'down')),
    rank      INTEGER NOT NULL,
    token_id  INTEGER NOT NULL,
    token     VARCHAR NOT NULL,
    effect    DOUBLE NOT NULL,
    PRIMARY KEY (run_id, feature, direction, rank)
);
COMMENT ON TABLE feature_token_effects IS 'Tokens the feature''s decoder direction pushes up and down: through the unembedding (causal LMs: logit effects) or through the token embedding matrix (encoders), centred over the vocabulary; special and unused tokens excluded.';
COMMENT ON COLUMN feature_token_effects.run_id IS 'The analysed run (runs.run_id).';
COMMENT ON COLUMN feature_token_effects.feature IS 'Feature index (features.feature).';
COMMENT ON COLUMN feature_token_effects.token_id IS 'Token id in the model''s vocabulary.';
COMMENT ON COLUMN feature_token_effects.token IS 'The token as the tokenizer spells it.';
COMMENT ON COLUMN feature_token_effects.direction IS 'up (largest effects) or down (most negative).';
COMMENT ON COLUMN feature_token_effects.rank IS '0 = strongest in that direction.';
COMMENT ON COLUMN feature_token_effects.effect IS 'decoder_row . (W[token] - mean over tokens of W), W the unembedding or embedding matrix.';

CREATE TABLE clusters (
    run_id           VARCHAR NOT NULL,
    cluster          INTEGER NOT NULL,
    size             INTEGER NOT NULL,
    label            VARCHAR NOT NULL,
    top_tokens       VARCHAR[] NOT NULL,
    central_features INTEGER[] NOT NULL,
    centre_x         DOUBLE,
    centre_y         DOUBLE,
    centre_z         DOUBLE,
    class_counts     JSON NOT NULL,
    mean_label_score DOUBLE,
    PRIMARY KEY (run_id, cluster)
);
COMMENT ON TABLE clusters IS 'k-means clusters of the concept map (live features): size, most characteristic tokens and the features nearest the centre.';
COMMENT ON COLUMN clusters.run_id IS 'The analysed run (runs.run_id).';
COMMENT ON COLUMN clusters.cluster IS 'Cluster id, 0 = the largest (features.cluster).';
COMMENT ON COLUMN clusters.size IS 'Member features.';
COMMENT ON COLUMN clusters.label IS 'The cluster''s three most characteristic tokens.';
COMMENT ON COLUMN clusters.top_tokens IS 'Tokens most over-represented where the cluster''s features fire (log-odds against corpus frequency, pooled over members).';
COMMENT ON COLUMN clusters.central_features IS 'Member features nearest the cluster centre, nearest first.';
COMMENT ON COLUMN clusters.centre_x IS 'Mean map_x of the members.';
COMMENT ON COLUMN clusters.centre_y IS 'Mean map_y of the members.';
COMMENT ON COLUMN clusters.centre_z IS 'Mean map_z of the members.';
COMMENT ON COLUMN clusters.class_counts IS 'Members per class, e.g. {"prose-leaning": 40, "shared": 12}.';
COMMENT ON COLUMN clusters.mean_label_score IS 'Mean detection score of the members'' labels.';

CREATE TABLE feature_matches (
    run_a      VARCHAR NOT NULL,
    run_b      VARCHAR NOT NULL,
    feature_a  INTEGER NOT NULL,
    feature_b  INTEGER NOT NULL,
    cosine     DOUBLE NOT NULL,
    mutual     BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_a, run_b, feature_a)
);
COMMENT ON TABLE feature_matches IS 'For two runs with the same input width, each feature of run_a matched to its best counterpart in run_b by decoder cosine (follow a feature across a sweep).';
COMMENT ON COLUMN feature_matches.run_a IS 'The run whose features are matched (runs.run_id).';
COMMENT ON COLUMN feature_matches.run_b IS 'The run they are matched into (runs.run_id).';
COMMENT ON COLUMN feature_matches.feature_a IS 'Feature of run_a.';
COMMENT ON COLUMN feature_matches.feature_b IS 'The run_b feature whose decoder row has the highest cosine with feature_a''s.';
COMMENT ON COLUMN feature_matches.cosine IS 'Cosine of the two decoder rows.';
COMMENT ON COLUMN feature_matches.mutual IS 'True when feature_a is also feature_b''s best match in run_a (a one-to-one correspondence).';
COMMENT ON COLUMN feature_matches.created_at IS 'When the match was computed (UTC).';
