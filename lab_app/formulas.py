"""What each number the app shows means, with its formula (shown on hover next to the number)."""

FORMULAS: dict[str, tuple[str, str]] = {
    "fvu": ("FVU", "Fraction of variance unexplained on held-out tokens: Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the eval-set mean "
                   "(mean-centred). Lower is better."),
    "r2": ("R²", "Explained variance = 1 − FVU (mean-centred). Higher is better."),
    "mse": ("MSE", "Σ‖x − x̂‖² / (N·d), in the model's activation units."),
    "cosine": ("cosine", "Mean over tokens of cos(x, x̂)."),
    "l0": ("L0", "Mean number of active latents per token."),
    "l1": ("L1", "Mean sum of latent activations per token."),
    "dead_frac": ("dead", "Share of latents that never fire on the held-out tokens."),
    "transfer_ratio": ("transfer ×",
                       "MSE(train on A, eval on B) / MSE(train on A, eval on A), averaged over the other domains. 1 = no loss."),
    "score": ("quality", "Seed 004's 0–5 score: reconstruction 0–2 (MSE, cosine, explained-variance bands) + sparsity 0–2 (L0 "
                         "vs k, dead fraction) + interpretability 0–1 (distinct one-token features)."),
    "overall": ("overall", "(R²_in + 1/transfer ratio + (1 − L0/d_in)) / 3: reconstruction, transfer and sparsity together, 1 = "
                           "ideal."),
    "ce_recovered": ("CE recovered",
                     "(CE_zero − CE_sae) / (CE_zero − CE_clean) with the SAE spliced in at the hook (causal LMs)."),
    "emb_cos_sae": ("embedding cosine",
                    "Mean cosine of the pooled sentence embedding with vs without the SAE splice (encoders)."),
    "frequency": ("frequency", "Share of tokens on which the feature fires (activation > 0)."),
    "selectivity": ("selectivity", "freq on this domain − freq on the others (N domains: each against the rest)."),
    "detection": ("detection",
                  "Balanced accuracy of the auto-label predicting where the feature fires on held-out text (0.5 = chance)."),
}


def help_for(metric: str) -> str:
    return FORMULAS.get(metric, (metric, ""))[1]


def label_for(metric: str) -> str:
    return FORMULAS.get(metric, (metric, ""))[0]
