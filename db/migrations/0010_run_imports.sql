-- SAEs trained elsewhere (SAELens, sparsify, dictionary_learning, SAELens pretrained releases) and
-- imported into the lab (issue 16). An imported SAE is a FINISHED run like any other (runs,
-- eval_results, splice_results, quality_scores, the feature analysis); this table keeps where it came
-- from: the source's format and path, the content hash of its weights file (re-importing the same
-- file for the same model, hook and layer finds the existing run instead of adding another), the
-- original configuration verbatim, and what the lab changed to read it (folded scalings, biases).
CREATE TABLE run_imports (
    run_id              VARCHAR PRIMARY KEY,
    source_format       VARCHAR NOT NULL,
    source_path         VARCHAR NOT NULL,
    weights_file        VARCHAR NOT NULL,
    weights_sha256      VARCHAR NOT NULL,
    source_architecture VARCHAR NOT NULL,
    source_hook         VARCHAR,
    source_model        VARCHAR,
    original_config     VARCHAR NOT NULL,
    conversion          JSON NOT NULL,
    imported_at         TIMESTAMP NOT NULL
);
COMMENT ON TABLE run_imports IS 'Provenance of runs imported from elsewhere (python -m engine import): one row per imported run.';
COMMENT ON COLUMN run_imports.source_format IS 'saelens, sparsify, dictionary_learning or saelens-release.';
COMMENT ON COLUMN run_imports.source_path IS 'The folder imported (absolute), or release/sae_id for a SAELens pretrained release.';
COMMENT ON COLUMN run_imports.weights_file IS 'The weights file read: sae_weights.safetensors, sae.safetensors or ae.pt.';
COMMENT ON COLUMN run_imports.weights_sha256 IS 'sha256 of the weights file''s bytes: the same file imported again for the same model, hook and layer is not a new run.';
COMMENT ON COLUMN run_imports.source_architecture IS 'The architecture as the source names it (e.g. topk, jumprelu/batchtopk, AutoEncoderTopK); runs.architecture holds the lab''s.';
COMMENT ON COLUMN run_imports.source_hook IS 'The hook as the source names it (blocks.2.hook_mlp_out, layers.2.mlp, ...); runs.hook and runs.layer hold the lab''s.';
COMMENT ON COLUMN run_imports.source_model IS 'The model the source names, if any (the SAE is evaluated on runs.model).';
COMMENT ON COLUMN run_imports.original_config IS 'The source''s configuration file, verbatim.';
COMMENT ON COLUMN run_imports.conversion IS 'What the lab did to read the weights: notes (folded normalisation, biases, decoder norms) and where k came from.';
