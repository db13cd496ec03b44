-- Findings cards (findings/): what a researcher concluded about SAE features, with every revision
-- and the evidence frozen when it was saved. Nothing here refers to the run tables by foreign key:
-- a card and its evidence outlive the run being re-analysed or deleted.
-- The revisions are the record (finding_revisions.card holds the whole card at each revision);
-- findings and finding_features are the indexes search and the SQL page read.

CREATE TABLE findings (
    card_id      VARCHAR PRIMARY KEY,
    revision     INTEGER NOT NULL,
    title        VARCHAR NOT NULL,
    claim        VARCHAR NOT NULL,
    label        VARCHAR NOT NULL,
    description  VARCHAR NOT NULL,
    confidence   VARCHAR NOT NULL CHECK (confidence IN ('low', 'medium', 'high')),
    status       VARCHAR NOT NULL CHECK (status IN ('draft', 'supported', 'refuted')),
    tags         VARCHAR[] NOT NULL,
    notes        VARCHAR NOT NULL,
    examples     VARCHAR[] NOT NULL,
    author       VARCHAR NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL,
    updated_by   VARCHAR NOT NULL,
    deleted_at   TIMESTAMP
);
COMMENT ON TABLE findings IS 'One row per findings card: its current revision (the history is in finding_revisions). A researcher''s conclusion about SAE features, kept across runs.';
COMMENT ON COLUMN findings.card_id IS 'Card id, card-<hex>; kept when a card is exported and imported into another lab.';
COMMENT ON COLUMN findings.revision IS 'Current revision number, 1 at creation, +1 per save; also the version an edit must name (a stale one is refused).';
COMMENT ON COLUMN findings.title IS 'One-line title (stored verbatim, escaped when shown).';
COMMENT ON COLUMN findings.claim IS 'The hypothesis in a sentence, e.g. "fires on the token def at the start of a function".';
COMMENT ON COLUMN findings.label IS 'Short curated label of the feature(s); prefilled with the automatic label (features.label).';
COMMENT ON COLUMN findings.description IS 'What the feature does, in the researcher''s words (up to 100,000 characters).';
COMMENT ON COLUMN findings.confidence IS 'low, medium or high: how sure the researcher is (prefilled from the label''s detection score: >= 0.9 high, >= 0.75 medium).';
COMMENT ON COLUMN findings.status IS 'draft, supported (the evidence backs the claim) or refuted.';
COMMENT ON COLUMN findings.tags IS 'Free tags (prefilled with the feature class, e.g. code-leaning).';
COMMENT ON COLUMN findings.notes IS 'Free notes.';
COMMENT ON COLUMN findings.examples IS 'Curated example texts (the examples of a seed-004 feature registry entry).';
COMMENT ON COLUMN findings.author IS 'Who created the card.';
COMMENT ON COLUMN findings.created_at IS 'When the card was created (UTC).';
COMMENT ON COLUMN findings.updated_at IS 'When the current revision was saved (UTC).';
COMMENT ON COLUMN findings.updated_by IS 'Who saved the current revision.';
COMMENT ON COLUMN findings.deleted_at IS 'When the card was deleted (UTC); NULL for a live card. A deleted card keeps its history and can be restored; purging removes it.';

CREATE TABLE finding_revisions (
    card_id    VARCHAR NOT NULL,
    revision   INTEGER NOT NULL,
    action     VARCHAR NOT NULL CHECK (action IN ('create', 'edit', 'evidence', 'delete', 'restore')),
    author     VARCHAR NOT NULL,
    note       VARCHAR NOT NULL,
    edited_at  TIMESTAMP NOT NULL,
    changed    VARCHAR[] NOT NULL,
    card       JSON NOT NULL,
    PRIMARY KEY (card_id, revision)
);
COMMENT ON TABLE finding_revisions IS 'Every saved state of every card: a card can be shown as it was at any revision.';
COMMENT ON COLUMN finding_revisions.card_id IS 'The card (findings.card_id).';
COMMENT ON COLUMN finding_revisions.revision IS 'Revision number, 1 = as created.';
COMMENT ON COLUMN finding_revisions.action IS 'create, edit, evidence (evidence attached), delete or restore.';
COMMENT ON COLUMN finding_revisions.author IS 'Who saved this revision.';
COMMENT ON COLUMN finding_revisions.note IS 'The change note given with the save (may be empty).';
COMMENT ON COLUMN finding_revisions.edited_at IS 'When this revision was saved (UTC).';
COMMENT ON COLUMN finding_revisions.changed IS 'Card fields that differ from the previous revision.';
COMMENT ON COLUMN finding_revisions.card IS 'The whole card at this revision (JSON): every field, its feature references and evidence with their snapshot ids.';

CREATE TABLE finding_features (
    card_id     VARCHAR NOT NULL,
    revision    INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    run_id      VARCHAR NOT NULL,
    layer       INTEGER,
    hook        VARCHAR,
    feature     INTEGER NOT NULL,
    snapshot_id VARCHAR NOT NULL,
    PRIMARY KEY (card_id, revision, position)
);
COMMENT ON TABLE finding_features IS 'The features each revision of each card is about (current ones: revision = findings.revision), with the evidence snapshot frozen for each. The run may since have been deleted.';
COMMENT ON COLUMN finding_features.card_id IS 'The card (findings.card_id).';
COMMENT ON COLUMN finding_features.revision IS 'The card revision these references belong to.';
COMMENT ON COLUMN finding_features.position IS 'Order of the feature on the card, 0 first.';
COMMENT ON COLUMN finding_features.run_id IS 'The run whose SAE holds the feature (runs.run_id, when the run still exists).';
COMMENT ON COLUMN finding_features.layer IS 'The run''s layer.';
COMMENT ON COLUMN finding_features.hook IS 'The run''s hook point.';
COMMENT ON COLUMN finding_features.feature IS 'Feature (latent) index in that SAE.';
COMMENT ON COLUMN finding_features.snapshot_id IS 'The evidence frozen for this feature (evidence_snapshots.snapshot_id).';

CREATE TABLE finding_evidence (
    card_id     VARCHAR NOT NULL,
    evidence_no INTEGER NOT NULL,
    kind        VARCHAR NOT NULL,
    snapshot_id VARCHAR NOT NULL,
    note        VARCHAR NOT NULL,
    attached_at TIMESTAMP NOT NULL,
    attached_by VARCHAR NOT NULL,
    revision    INTEGER NOT NULL,
    PRIMARY KEY (card_id, evidence_no)
);
COMMENT ON TABLE finding_evidence IS 'Evidence attached to a card besides its features'' snapshots, e.g. an intervention result: kept like a feature snapshot, by content hash.';
COMMENT ON COLUMN finding_evidence.card_id IS 'The card (findings.card_id).';
COMMENT ON COLUMN finding_evidence.evidence_no IS 'Order of attachment on the card, 1 first.';
COMMENT ON COLUMN finding_evidence.kind IS 'What the evidence is, e.g. intervention (the data''s shape depends on it).';
COMMENT ON COLUMN finding_evidence.snapshot_id IS 'The frozen data (evidence_snapshots.snapshot_id).';
COMMENT ON COLUMN finding_evidence.note IS 'What the researcher said about it when attaching it.';
COMMENT ON COLUMN finding_evidence.attached_at IS 'When it was attached (UTC).';
COMMENT ON COLUMN finding_evidence.attached_by IS 'Who attached it.';
COMMENT ON COLUMN finding_evidence.revision IS 'The card revision that attached it.';

CREATE TABLE evidence_snapshots (
    snapshot_id VARCHAR PRIMARY KEY,
    kind        VARCHAR NOT NULL,
    run_id      VARCHAR,
    feature     INTEGER,
    bytes       INTEGER NOT NULL,
    data        JSON NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
COMMENT ON TABLE evidence_snapshots IS 'Evidence frozen when a card was saved, shared by content hash: a card still stands after its run is re-analysed or deleted. Deleting a card for good removes only snapshots no other card refers to.';
COMMENT ON COLUMN evidence_snapshots.snapshot_id IS 'First 32 hex digits of sha256(kind, newline, data): equal evidence, one row.';
COMMENT ON COLUMN evidence_snapshots.kind IS 'feature (a feature''s inspector payload and its run''s settings) or the kind of attached evidence (finding_evidence.kind).';
COMMENT ON COLUMN evidence_snapshots.run_id IS 'The run the evidence is about, when it is about one (the run may no longer exist).';
COMMENT ON COLUMN evidence_snapshots.feature IS 'The feature the evidence is about, when it is about one.';
COMMENT ON COLUMN evidence_snapshots.bytes IS 'Size of data in bytes (UTF-8).';
COMMENT ON COLUMN evidence_snapshots.data IS 'The frozen evidence (JSON, sorted keys). For kind feature: {run: the runs row, feature, detail: the inspector payload (feature row with label and detection score, per-domain statistics and histograms, top and quantile contexts, neighbours, token effects, analysis info) or null when the run had no analysis, note}.';
COMMENT ON COLUMN evidence_snapshots.created_at IS 'When this evidence was first frozen in this lab (UTC).';
