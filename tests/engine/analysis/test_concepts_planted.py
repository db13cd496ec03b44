"""Ground truth for the concept evaluation: a concept planted in the activations is found, scored
right, and beats the model-dims baseline; a random SAE of the same size does not.

The corpus is real text (generated Python, read through the lab's own ``file:`` corpus and
packed by the lab's own ``build_sequences`` with the bundled tokenizer), so the concept pipeline
must rebuild the text and align it through character offsets exactly as for a collected run.
The activations are synthetic, built from known parts as in ``test_planted``: every row is a
sum of four unit directions (three or four of 40 background directions) plus noise, and every
row whose token is a *function name being defined* also carries the planted direction
``u_def``. Function names come from a pool of words used nowhere else, so the planted rows are
known from the token ids alone, independently of the concept code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import db

D, HOOK, LAYER, SEQ_LEN = 384, "mlp_out", 2, 64
NOISE = 0.1  # per dimension: real activations are dense, so no single model dim isolates a direction
DEF_NAMES = ("planet river mountain garden window yellow silver forest orange castle harbor island meadow valley ocean "
             "desert").split()
NAMES = "alpha beta gamma delta count value item total index result data size text line first last".split()
CALLS = "apply merge split join scale shift clip pack".split()
ATTRS = "keys items parent child head tail upper lower".split()


def write_corpus(folder, rng: np.random.Generator, n_files: int = 40, per_file: int = 24) -> None:
    folder.mkdir(parents=True)
    for i in range(n_files):
        funcs = []
        for _ in range(per_file):
            f, a, b, v = rng.choice(DEF_NAMES), *rng.choice(NAMES, 3, replace=False)
            g, attr, num = rng.choice(CALLS), rng.choice(ATTRS), int(rng.integers(0, 100))
            funcs.append(f"def {f}({a}, {b}):\n    {v} = {a}.{attr}({b}, {num})\n    if {v} is None:\n"
                         f"        return {g}({b})\n    return {v}\n")
        (folder / f"mod{i:02d}.py").write_text("\n".join(funcs))


def build_store(lab, rng: np.random.Generator):
    """A store in the lab's format: real packed token ids of the corpus, synthetic activations."""
    from engine.collection.collect import build_sequences
    from engine.collection.models import load_model, resolve_model
    from engine.collection.store import site_file, site_name
    from engine.config import DataConfig, DomainSpec

    corpus = lab.root.parent / "corpus"
    write_corpus(corpus, rng)
    loaded = load_model(resolve_model("all-MiniLM-L6-v2"), torch.device("cpu"))
    domain = DomainSpec(name="code", source=f"file:{corpus}")
    data = DataConfig(domains=[domain], tokens_per_domain=20_000, seq_len=SEQ_LEN)
    seqs = build_sequences(loaded, domain, data, seed=0)
    tokens, keep = seqs.tokens, seqs.keep
    seq_idx, pos_idx = np.nonzero(keep)
    n = len(seq_idx)
    def_ids = np.array(loaded.tokenizer.convert_tokens_to_ids(DEF_NAMES))
    is_def = np.isin(tokens[seq_idx, pos_idx], def_ids)

    def unit(k: int) -> np.ndarray:
        v = rng.standard_normal((k, D))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    background, (u_def,) = unit(40), unit(1)
    order = np.argsort(rng.random((n, 40)), axis=1)
    active = np.zeros((n, 40), dtype=bool)
    np.put_along_axis(active, order[:, :4], True, 1)
    active[is_def, order[is_def, 3]] = False
    acts = (rng.uniform(0.5, 1.5, (n, 40)) * active) @ background + NOISE * rng.standard_normal((n, D))
    acts += np.outer(is_def * rng.uniform(0.5, 1.5, n), u_def)
    n_val = seqs.n_val
    val_start = int(keep[: len(tokens) - n_val].sum())
    key = "planted-concept-store"
    folder = lab.activations / key
    folder.mkdir(parents=True)
    np.save(folder / "tokens.npy", tokens)
    np.save(folder / "rows.npy", np.stack([seq_idx, pos_idx], 1).astype(np.int32))
    np.save(folder / site_file(HOOK, LAYER), acts.astype(np.float16))
    train = acts[:val_start]
    meta = {"key": key, "material": {"domain": domain.to_dict(), "seed": 0}, "model": "all-MiniLM-L6-v2", "domain": "code",
            "source": domain.source, "seq_len": SEQ_LEN, "seed": 0, "n_sequences": len(tokens), "n_val_sequences": n_val,
            "n_rows": n, "val_start_row": val_start, "d_model": D,
            "sites": {site_name(HOOK, LAYER): {"file": site_file(HOOK, LAYER), "hook": HOOK, "layer": LAYER,
                                               "train_mean": train.mean(0).tolist(),
                                               "train_mean_sq_norm": float((train**2).sum(1).mean())}}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return key, domain, is_def, val_start, u_def


def save_run(lab, run_id: str, key: str, domain, n_rows: int, val_start: int, train: bool) -> np.ndarray:
    from engine.collection.store import ActivationStore
    from engine.config import ExperimentConfig
    from engine.training.data import ShuffledBatches
    from engine.training.trainer import Trainer, init_sae_from_store_stats

    config = ExperimentConfig.from_dict({
        "hook": HOOK, "layer": LAYER,
        "data": {"domains": [domain.to_dict()], "seq_len": SEQ_LEN, "tokens_per_domain": n_rows},
        "sae": {"d_sae": 64, "k": 4},
        "train": {"epochs": 10, "batch_size": 512, "lr": 3e-3, "dead_after_tokens": 20000},
    })
    store = ActivationStore.open(lab.activations / key)
    st = store.site_stats(HOOK, LAYER)
    sae = init_sae_from_store_stats(D, config.sae, np.asarray(st["train_mean"]), st["train_mean_sq_norm"], 0)
    if train:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            batches = ShuffledBatches(store.acts(HOOK, LAYER), 0, val_start, config.train.batch_size, 0)
            Trainer(sae, config.sae, config.train, batches, torch.device("cpu"), 0).run(resume=False)
        finally:
            torch.set_num_threads(threads)
    run_dir = lab.run_dir(run_id)
    run_dir.mkdir(parents=True)
    sae.save(run_dir / "sae", {"run_id": run_id, "hook_name": f"{HOOK}@{LAYER}"})
    (run_dir / "config.json").write_text(json.dumps({"run_id": run_id, "group_id": "g-planted-concept", "train_domain": "code",
                                                     "experiment": config.to_dict(), "activation_sets": {"code": key}}))
    return sae.W_dec.detach().numpy()


@pytest.fixture(scope="module")
def planted_concept(tmp_path_factory):
    from core.lab import Lab
    from engine.analysis.analyze import analyze_run

    lab = Lab.at(tmp_path_factory.mktemp("planted_concept") / "lab")
    rng = np.random.default_rng(0)
    key, domain, is_def, val_start, u_def = build_store(lab, rng)
    W = save_run(lab, "trained", key, domain, len(is_def), val_start, train=True)
    save_run(lab, "random", key, domain, len(is_def), val_start, train=False)
    summaries = {rid: analyze_run(lab, rid) for rid in ("trained", "random")}
    return lab, key, is_def, val_start, W, u_def, summaries


def _concept(lab, run_id: str, name: str) -> dict:
    return db.query(lab, "SELECT * FROM concept_results WHERE run_id = ? AND concept = ?", [run_id, name]).iloc[0].to_dict()


def test_planted_concept_is_covered_and_beats_the_baseline(planted_concept):
    lab, _, _, _, W, u_def, summaries = planted_concept
    r = _concept(lab, "trained", "def-name")
    assert r["status"] == "evaluated" and r["n_val_pos"] >= 20
    Wn = W / np.linalg.norm(W, axis=1, keepdims=True)
    assert abs(Wn[r["best_latent"]] @ u_def) > 0.9, "the best latent is not the planted direction"
    assert r["f1"] >= 0.9 and r["auroc"] >= 0.95
    assert r["probe_k1"] >= 0.9
    assert r["probe_k1"] >= r["baseline_k1"] + 0.2, (r["probe_k1"], r["baseline_k1"])
    assert r["latents_to_90"] == 1  # one latent carries the whole concept
    assert summaries["trained"]["concepts"]["coverage"] > 0


def test_a_random_sae_of_the_same_size_scores_near_the_baseline(planted_concept):
    lab = planted_concept[0]
    r = _concept(lab, "random", "def-name")
    trained = _concept(lab, "trained", "def-name")
    assert r["f1"] < 0.5
    # Near the baseline or below it (its sparse, random gating throws information away: measured
    # 0.59 against the dims' 0.76), never near the trained SAE.
    assert r["probe_k1"] <= r["baseline_k1"] + 0.05, (r["probe_k1"], r["baseline_k1"])
    assert r["probe_k1"] <= trained["probe_k1"] - 0.3
    assert r["baseline_k1"] == pytest.approx(trained["baseline_k1"])  # same model dims, same rows, same seed
    metrics = db.query(lab, "SELECT run_id, concept_coverage, probe_k1, probe_k1_baseline FROM run_metrics ORDER BY run_id")
    assert metrics.empty  # these runs have no evaluation rows: run_metrics lists evaluated runs only


def test_metrics_match_sklearn_on_the_stored_activations(planted_concept):
    """Precision, recall, F1 and AUROC recomputed from the saved SAE and the store, with the planted
    truth (token ids) as labels and sklearn as the arithmetic."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    from engine.collection.store import ActivationStore
    from tests.engine.analysis.conftest import numpy_topk_codes

    lab, key, is_def, val_start, _, _, _ = planted_concept
    r = _concept(lab, "trained", "def-name")
    store = ActivationStore.open(lab.activations / key)
    x = np.asarray(store.acts(HOOK, LAYER)[val_start:], dtype=np.float32)
    codes = numpy_topk_codes(lab.run_dir("trained") / "sae", x)
    score = codes[:, r["best_latent"]]
    y = is_def[val_start:]
    assert r["n_val_pos"] == int(y.sum())
    pred = score >= r["threshold"]
    assert r["auroc"] == pytest.approx(roc_auc_score(y, score), abs=1e-6)
    assert r["precision"] == pytest.approx(precision_score(y, pred), abs=1e-6)
    assert r["recall"] == pytest.approx(recall_score(y, pred), abs=1e-6)
    assert r["f1"] == pytest.approx(f1_score(y, pred), abs=1e-6)


def test_concept_rows_have_their_text_and_every_evaluated_row_is_complete(planted_concept):
    lab = planted_concept[0]
    rows = db.query(lab, "SELECT * FROM concept_results WHERE run_id = 'trained'")
    ev = rows[rows["status"] == "evaluated"]
    assert {"kw:def", "kw:return", "call", "attribute", "number", "def-name"} <= set(ev["concept"])
    assert not ev[["best_latent", "f1", "auroc", "probe_k1", "probe_k2", "probe_k5", "baseline_k1"]].isna().any().any()
    prose = rows[rows["concept"].str.startswith("prose:")]
    assert (prose["status"] == "no domain of its kind").all() and len(prose) == 5
