-- Interventions (engine/interventions): a feature of a run's SAE suppressed, scaled or clamped
-- inside the model's forward pass, and what changed. One row in `interventions` per run of an
-- edit, with the spec that produced it; child tables hold the token movers, the side-by-side
-- generations and the nearest-neighbour ranks. Rows are only ever inserted (an intervention is
-- a record of what happened), all of one intervention in one transaction.
-- `specificity_studies` / `specificity_features` hold the ablation-specificity comparison
-- (engine/interventions/specificity.py): own top contexts vs random contexts vs a matched control.

CREATE TABLE interventions (
    intervention_id    VARCHAR PRIMARY KEY,
    run_id             VARCHAR NOT NULL,
    features           INTEGER[] NOT NULL,
    edits              JSON NOT NULL,
    spec               JSON NOT NULL,
    model_kind         VARCHAR NOT NULL CHECK (model_kind IN ('causal', 'encoder')),
    input_kind         VARCHAR NOT NULL CHECK (input_kind IN ('text', 'corpus')),
    input_text         VARCHAR,
    domain             VARCHAR,
    sequences          INTEGER[],
    tokens             VARCHAR[],
    edited_mask        BOOLEAN[],
    n_tokens           INTEGER NOT NULL,
    n_edited_positions INTEGER NOT NULL,
    feature_acts       JSON NOT NULL,
    kl_mean            DOUBLE,
    kl_max             DOUBLE,
    kl_per_position    DOUBLE[],
    cosine_shift       DOUBLE,
    shift_per_position DOUBLE[],
    per_sequence       DOUBLE[],
    delta_ce           JSON,
    token_source       VARCHAR,
    neighbour_overlap  DOUBLE,
    neighbour_spearman DOUBLE,
    neighbour_corpus   INTEGER,
    notes              VARCHAR[],
    seconds            DOUBLE NOT NULL,
    code_version       VARCHAR,
    created_at         TIMESTAMP NOT NULL
);
COMMENT ON TABLE interventions IS 'One row per intervention: which features of which run were zeroed, scaled or clamped, on what input, and the headline effects. The edit replaces the hooked activation x by x + sum_j (f''_j - f_j) W_dec[j] (the SAE reconstruction with edited latents plus the error term), at the positions the SAE was trained on.';
COMMENT ON COLUMN interventions.intervention_id IS 'Id of the intervention (iv-<UTC time>-<random>).';
COMMENT ON COLUMN interventions.run_id IS 'The run whose SAE and model were used (runs.run_id).';
COMMENT ON COLUMN interventions.features IS 'The edited feature indices (features.feature), for lookups by feature: list_contains(features, 12).';
COMMENT ON COLUMN interventions.edits IS 'The edits as JSON: [{"feature": j, "op": "zero" | "scale" | "clamp", "value": factor or clamp value}]. zero: f''_j = 0; scale: f''_j = value * f_j; clamp: f''_j = value at every edited position (also where f_j = 0). Empty: the untouched splice.';
COMMENT ON COLUMN interventions.spec IS 'The whole InterventionSpec (JSON): run, edits, input and options (generation, CE slice, neighbour corpus); InterventionSpec.from_dict reads it back.';
COMMENT ON COLUMN interventions.model_kind IS 'causal (effects on next-token logits) or encoder (effects on the mean-pooled sentence embedding).';
COMMENT ON COLUMN interventions.input_kind IS 'text (a text given by a person) or corpus (stored sequences of one of the run''s domains).';
COMMENT ON COLUMN interventions.input_text IS 'The text, for text input.';
COMMENT ON COLUMN interventions.domain IS 'The domain of the sequences, for corpus input.';
COMMENT ON COLUMN interventions.sequences IS 'Sequence indices in the domain''s activation set (token_sequences.seq), for corpus input.';
COMMENT ON COLUMN interventions.tokens IS 'Text input: the tokens the model saw, special tokens included (causal LMs: the tokenizer''s prefix and the text; encoders: [CLS] text [SEP]).';
COMMENT ON COLUMN interventions.edited_mask IS 'Text input: true at the positions the edit was applied to (the tokens the SAE was trained on; special tokens stay clean).';
COMMENT ON COLUMN interventions.n_tokens IS 'Tokens in the input (all sequences for corpus input), special tokens included.';
COMMENT ON COLUMN interventions.n_edited_positions IS 'Positions where the edit was applied.';
COMMENT ON COLUMN interventions.feature_acts IS 'Per edited feature (JSON keyed by feature): fired_positions (edited positions where its clean activation f_j > 0), max_act and mean_act_when_fired on the input.';
COMMENT ON COLUMN interventions.kl_mean IS 'Causal LMs: mean over the edited positions of KL(p_clean || p_edited) of the next-token distribution, in nats. NULL for encoders.';
COMMENT ON COLUMN interventions.kl_max IS 'Causal LMs: the largest of those per-position KLs.';
COMMENT ON COLUMN interventions.kl_per_position IS 'Causal LMs, text input: KL(p_clean || p_edited) at every position of tokens (special positions included).';
COMMENT ON COLUMN interventions.cosine_shift IS 'Encoders: 1 - cos(clean, edited) of the mean-pooled final hidden state (the sentence embedding), averaged over sequences for corpus input. NULL for causal LMs.';
COMMENT ON COLUMN interventions.shift_per_position IS 'Encoders, text input: 1 - cos of each token''s final hidden state, clean vs edited.';
COMMENT ON COLUMN interventions.per_sequence IS 'Corpus input: the headline effect (mean KL or cosine shift) of each sequence, in the order of sequences.';
COMMENT ON COLUMN interventions.delta_ce IS 'Causal LMs: per domain (JSON) the next-token cross-entropy on its first held-out sequences, clean and edited, and delta_ce = edited - clean (nats/token), with n_sequences and n_tokens.';
COMMENT ON COLUMN interventions.token_source IS 'What intervention_token_movers measure: logits (mean logit change over edited positions) or embedding (the mean final-hidden-state change projected on the tied word embeddings).';
COMMENT ON COLUMN interventions.neighbour_overlap IS 'Encoders, text input: share of the top-k nearest corpus sentences (by cosine) that stay in the top k after the edit (k in spec.options.neighbour_top).';
COMMENT ON COLUMN interventions.neighbour_spearman IS 'Encoders, text input: Spearman correlation of the cosine similarities to all corpus sentences, clean vs edited.';
COMMENT ON COLUMN interventions.neighbour_corpus IS 'Encoders, text input: corpus sentences ranked (the first held-out sequences of every domain).';
COMMENT ON COLUMN interventions.notes IS 'Warnings about the input: a feature that does not fire on it, a dead feature, a text longer than the SAE''s training windows.';
COMMENT ON COLUMN interventions.seconds IS 'Wall-clock seconds to run and measure the intervention (model loading included when it was the first).';
COMMENT ON COLUMN interventions.code_version IS 'git commit of the lab code that ran it (+dirty).';
COMMENT ON COLUMN interventions.created_at IS 'When the intervention ran (UTC).';

CREATE TABLE intervention_token_movers (
    intervention_id VARCHAR NOT NULL,
    direction       VARCHAR NOT NULL CHECK (direction IN ('up', 'down')),
    rank            INTEGER NOT NULL,
    token_id        INTEGER NOT NULL,
    token           VARCHAR NOT NULL,
    delta           DOUBLE NOT NULL,
    PRIMARY KEY (intervention_id, direction, rank)
);
COMMENT ON TABLE intervention_token_movers IS 'Tokens an intervention pushed up and down most: causal LMs by the mean logit change over the edited positions, encoders by the mean final-hidden-state change read through the word embeddings; centred over the vocabulary, special and unused tokens excluded.';
COMMENT ON COLUMN intervention_token_movers.intervention_id IS 'The intervention (interventions.intervention_id).';
COMMENT ON COLUMN intervention_token_movers.direction IS 'up (largest increase) or down (largest decrease).';
COMMENT ON COLUMN intervention_token_movers.rank IS '0 = moved most in that direction.';
COMMENT ON COLUMN intervention_token_movers.token_id IS 'Token id in the model''s vocabulary.';
COMMENT ON COLUMN intervention_token_movers.token IS 'The token as the tokenizer spells it.';
COMMENT ON COLUMN intervention_token_movers.delta IS 'Centred change: logits, mean over edited positions of (edited - clean) minus its mean over tokens; embedding, (E[token] - mean over tokens of E) . mean over edited positions of (h_edited - h_clean).';

CREATE TABLE intervention_generations (
    intervention_id  VARCHAR PRIMARY KEY,
    prompt           VARCHAR NOT NULL,
    n_new_tokens     INTEGER NOT NULL,
    sampled          BOOLEAN NOT NULL,
    seed             INTEGER NOT NULL,
    temperature      DOUBLE NOT NULL,
    clean_text       VARCHAR NOT NULL,
    edited_text      VARCHAR NOT NULL,
    clean_tokens     VARCHAR[] NOT NULL,
    edited_tokens    VARCHAR[] NOT NULL,
    first_divergence INTEGER
);
COMMENT ON TABLE intervention_generations IS 'Causal LMs, text input: the continuation of the text generated without and with the edit (the edit applied at every generation step), same seed, side by side.';
COMMENT ON COLUMN intervention_generations.intervention_id IS 'The intervention (interventions.intervention_id).';
COMMENT ON COLUMN intervention_generations.prompt IS 'The text that was continued.';
COMMENT ON COLUMN intervention_generations.n_new_tokens IS 'Tokens generated on each side.';
COMMENT ON COLUMN intervention_generations.sampled IS 'False: greedy (argmax) decoding; true: sampled from softmax(logits / temperature).';
COMMENT ON COLUMN intervention_generations.seed IS 'Seed of the torch.Generator both sides sampled from (sampling only).';
COMMENT ON COLUMN intervention_generations.temperature IS 'Sampling temperature (sampling only).';
COMMENT ON COLUMN intervention_generations.clean_text IS 'The continuation without the edit, decoded.';
COMMENT ON COLUMN intervention_generations.edited_text IS 'The continuation with the edit, decoded.';
COMMENT ON COLUMN intervention_generations.clean_tokens IS 'The clean continuation token by token.';
COMMENT ON COLUMN intervention_generations.edited_tokens IS 'The edited continuation token by token.';
COMMENT ON COLUMN intervention_generations.first_divergence IS '0-based index of the first generated token that differs; NULL when both continuations are identical.';

CREATE TABLE intervention_neighbours (
    intervention_id VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL CHECK (kind IN ('clean_top', 'edited_top', 'moved_closer', 'moved_away')),
    rank            INTEGER NOT NULL,
    domain          VARCHAR NOT NULL,
    seq             INTEGER NOT NULL,
    text            VARCHAR NOT NULL,
    rank_clean      INTEGER NOT NULL,
    rank_edited     INTEGER NOT NULL,
    sim_clean       DOUBLE NOT NULL,
    sim_edited      DOUBLE NOT NULL,
    PRIMARY KEY (intervention_id, kind, rank)
);
COMMENT ON TABLE intervention_neighbours IS 'Encoders, text input: the corpus sentences nearest the text''s embedding before and after the edit, and those whose rank moved most.';
COMMENT ON COLUMN intervention_neighbours.intervention_id IS 'The intervention (interventions.intervention_id).';
COMMENT ON COLUMN intervention_neighbours.kind IS 'clean_top (nearest to the clean embedding), edited_top (nearest to the edited one), moved_closer / moved_away (largest rank changes).';
COMMENT ON COLUMN intervention_neighbours.rank IS 'Order within the kind (0 first).';
COMMENT ON COLUMN intervention_neighbours.domain IS 'Domain of the corpus sentence.';
COMMENT ON COLUMN intervention_neighbours.seq IS 'Its sequence index in the domain''s activation set (a held-out sequence).';
COMMENT ON COLUMN intervention_neighbours.text IS 'Its text, decoded without special tokens (first 240 characters).';
COMMENT ON COLUMN intervention_neighbours.rank_clean IS 'Its rank by cosine to the clean embedding (0 = nearest).';
COMMENT ON COLUMN intervention_neighbours.rank_edited IS 'Its rank by cosine to the edited embedding.';
COMMENT ON COLUMN intervention_neighbours.sim_clean IS 'Cosine similarity to the clean embedding.';
COMMENT ON COLUMN intervention_neighbours.sim_edited IS 'Cosine similarity to the edited embedding.';

CREATE TABLE specificity_studies (
    study_id            VARCHAR PRIMARY KEY,
    run_id              VARCHAR NOT NULL,
    model_kind          VARCHAR NOT NULL,
    metric              VARCHAR NOT NULL,
    n_features          INTEGER NOT NULL,
    n_contexts          INTEGER NOT NULL,
    n_candidates        INTEGER NOT NULL,
    seed                INTEGER NOT NULL,
    n_eligible          INTEGER NOT NULL,
    frac_own_gt_random  DOUBLE NOT NULL,
    frac_own_gt_control DOUBLE NOT NULL,
    p_own_gt_random     DOUBLE,
    p_own_gt_control    DOUBLE,
    median_own          DOUBLE NOT NULL,
    median_random       DOUBLE NOT NULL,
    median_control      DOUBLE NOT NULL,
    random_fire_share   DOUBLE NOT NULL,
    control_fire_share  DOUBLE NOT NULL,
    claim               VARCHAR NOT NULL,
    seconds             DOUBLE NOT NULL,
    code_version        VARCHAR,
    created_at          TIMESTAMP NOT NULL
);
COMMENT ON TABLE specificity_studies IS 'Ablation specificity of a run: for features drawn at random, the effect of zero-ablating feature j on its own top contexts compared with (a) ablating j on random corpus sequences and (b) ablating a live control feature of similar firing frequency on j''s contexts; one-sided Wilcoxon signed-rank tests over features.';
COMMENT ON COLUMN specificity_studies.study_id IS 'Id of the study (sp-<UTC time>-<random>).';
COMMENT ON COLUMN specificity_studies.run_id IS 'The run (runs.run_id).';
COMMENT ON COLUMN specificity_studies.model_kind IS 'causal or encoder.';
COMMENT ON COLUMN specificity_studies.metric IS 'The effect measured per sequence: kl (mean next-token KL(clean || edited) over edited positions, causal LMs) or cosine_shift (1 - cos of the mean-pooled embedding, encoders).';
COMMENT ON COLUMN specificity_studies.n_features IS 'Features compared (drawn at random among the eligible ones).';
COMMENT ON COLUMN specificity_studies.n_contexts IS 'Sequences per condition and feature.';
COMMENT ON COLUMN specificity_studies.n_candidates IS 'The control is drawn from this many live features nearest to j in log firing frequency.';
COMMENT ON COLUMN specificity_studies.seed IS 'Seed of the feature, control and random-context draws.';
COMMENT ON COLUMN specificity_studies.n_eligible IS 'Live features with at least n_contexts distinct top-context sequences (the population the features were drawn from).';
COMMENT ON COLUMN specificity_studies.frac_own_gt_random IS 'Share of features whose own-context effect exceeds their random-context effect.';
COMMENT ON COLUMN specificity_studies.frac_own_gt_control IS 'Share of features whose own-context effect exceeds the matched control''s effect on the same contexts.';
COMMENT ON COLUMN specificity_studies.p_own_gt_random IS 'One-sided Wilcoxon signed-rank p-value over features, H1: own - random > 0.';
COMMENT ON COLUMN specificity_studies.p_own_gt_control IS 'One-sided Wilcoxon signed-rank p-value over features, H1: own - control > 0.';
COMMENT ON COLUMN specificity_studies.median_own IS 'Median over features of the own-context effect.';
COMMENT ON COLUMN specificity_studies.median_random IS 'Median over features of the random-context effect.';
COMMENT ON COLUMN specificity_studies.median_control IS 'Median over features of the matched-control effect.';
COMMENT ON COLUMN specificity_studies.random_fire_share IS 'Share of random-context sequences in which the ablated feature fired at all (where it does not, zero-ablation changes nothing by construction).';
COMMENT ON COLUMN specificity_studies.control_fire_share IS 'Share of own-context sequences in which the control feature fired at all.';
COMMENT ON COLUMN specificity_studies.claim IS 'The claim the figures test, in words.';
COMMENT ON COLUMN specificity_studies.seconds IS 'Wall-clock seconds of the study.';
COMMENT ON COLUMN specificity_studies.code_version IS 'git commit of the lab code that ran it (+dirty).';
COMMENT ON COLUMN specificity_studies.created_at IS 'When the study ran (UTC).';

CREATE TABLE specificity_features (
    study_id        VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    freq            DOUBLE NOT NULL,
    control_feature INTEGER NOT NULL,
    control_freq    DOUBLE NOT NULL,
    own_effect      DOUBLE NOT NULL,
    random_effect   DOUBLE NOT NULL,
    control_effect  DOUBLE NOT NULL,
    own_sequences   VARCHAR[] NOT NULL,
    random_fired    INTEGER NOT NULL,
    control_fired   INTEGER NOT NULL,
    PRIMARY KEY (study_id, feature)
);
COMMENT ON TABLE specificity_features IS 'Per feature of a specificity study: its three mean effects and what they were measured on.';
COMMENT ON COLUMN specificity_features.study_id IS 'The study (specificity_studies.study_id).';
COMMENT ON COLUMN specificity_features.feature IS 'The ablated feature j.';
COMMENT ON COLUMN specificity_features.freq IS 'Its firing frequency over all domains (features.freq).';
COMMENT ON COLUMN specificity_features.control_feature IS 'The matched control feature (live, similar firing frequency).';
COMMENT ON COLUMN specificity_features.control_freq IS 'The control''s firing frequency.';
COMMENT ON COLUMN specificity_features.own_effect IS 'Mean effect of zeroing j on the sequences of its strongest activations.';
COMMENT ON COLUMN specificity_features.random_effect IS 'Mean effect of zeroing j on random corpus sequences (none of its own).';
COMMENT ON COLUMN specificity_features.control_effect IS 'Mean effect of zeroing the control feature on j''s own sequences.';
COMMENT ON COLUMN specificity_features.own_sequences IS 'j''s own sequences as domain:seq.';
COMMENT ON COLUMN specificity_features.random_fired IS 'Random sequences on which j fired at least once.';
COMMENT ON COLUMN specificity_features.control_fired IS 'Own sequences on which the control fired at least once.';
