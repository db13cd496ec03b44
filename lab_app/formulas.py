"""What each number the app shows means, with its formula (shown on hover next to the number)."""

FORMULAS: dict[str, tuple[str, str]] = {
    "fvu": ("FVU", "Fraction of variance unexplained on held-out tokens: Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the eval-set mean "
                   "(mean-centred). Lower is better."),
    "r2": ("R²", "Explained variance = 1 − FVU (mean-centred). Higher is better."),
    "mse": ("MSE", "Σ‖x − x̂‖² / (N·d), in the model's activation units."),
    "cosine": ("cosine", "Mean over tokens of cos(x, x̂)."),
    "l0": ("L0", "Mean number of active latents per token."),
    "l1": ("L1", "Mean sum of latent activations per token."),
    "dead_frac": ("dead (held-out)", "Share of latents that never fire on the held-out tokens of the training domain. A small "
                                     "held-out set reads 5–14× the training-split figure."),
    "dead_frac_train": ("dead (train)", "Share of latents that had not fired in the last train.dead_after_tokens training tokens "
                                        "when training ended (tokens since last fired, as the trainer counts them). "
                                        "None for an SAE imported from elsewhere: the lab did not train it."),
    "transfer_ratio": ("transfer ×",
                       "MSE(train on A, eval on B) / MSE(train on A, eval on A), averaged over the other domains. 1 = no loss."),
    "score": ("quality", "Seed 004's 0–5 score: reconstruction 0–2 (MSE, cosine, explained-variance bands) + sparsity 0–2 (L0 "
                         "vs k, dead fraction) + interpretability 0–1 (distinct features with a reliable label or a ground-truth "
                         "concept at F1 ≥ 0.8, once analysed). Warnings flag an SAE unfit for interpretability (FVU > 0.5, "
                         "> 50% dead, < 100 steps)."),
    "overall": ("overall", "(R²_in + 1/transfer ratio + (1 − L0/d_in)) / 3: reconstruction, transfer and sparsity together, 1 = "
                           "ideal."),
    "ce_recovered": ("CE recovered",
                     "(CE_zero − CE_sae) / (CE_zero − CE_clean) with the SAE spliced in at the hook (causal LMs); "
                     "empty, with a note, when |CE_zero − CE_clean| < 0.1 % of CE_clean (the ratio would be noise)."),
    "matmul_dtype": ("matmul dtype", "The dtype of the encoder's dense product during training: train.matmul_dtype = auto picks "
                                     "bfloat16 on a GPU or a CPU with native bf16 (AMX / AVX512-BF16), float32 elsewhere; the "
                                     "selected entries are recomputed in float32 either way."),
    "emb_cos_sae": ("embedding cosine",
                    "Mean cosine of the pooled sentence embedding with vs without the SAE splice (encoders)."),
    "frequency": ("frequency", "Share of tokens on which the feature fires (activation > 0)."),
    "selectivity": ("selectivity", "freq on this domain − freq on the others (N domains: each against the rest)."),
    "detection": ("detection",
                  "Balanced accuracy of the auto-label predicting where the feature fires on held-out text (0.5 = chance); "
                  "the label is shown only when its 95% interval's lower end is ≥ 0.6."),
    "concept_coverage": ("concepts",
                         "Share of ground-truth token concepts (Python keywords, def-names, calls, numbers, ``code`` in "
                         "docstrings, ...) with a latent at held-out F1 ≥ 0.8 (latent and threshold chosen on the training "
                         "split)."),
    "probe_k1": ("probe k=1",
                 "Mean over concepts of the held-out balanced accuracy of a logistic probe on the 1 latent with the largest "
                 "mean-activation difference (SAEBench k-sparse probing); compare with the same probe on 1 model dimension."),
    "probe_k1_baseline": ("probe k=1 (model)", "The same 1-sparse probe on the model's own activation dimensions: the baseline."),
}


def help_for(metric: str) -> str:
    return FORMULAS.get(metric, (metric, ""))[1]


def label_for(metric: str) -> str:
    return FORMULAS.get(metric, (metric, ""))[0]
