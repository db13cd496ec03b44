"""Ground truth for the whole analysis: a planted token feature is found, named and trusted; a
feature that is real but tied to no token is found and *not* trusted.

Design (the cleanest honest one we found): a real activation store on disk, in the lab's own
format, whose 19k activation rows are built from known parts instead of a model --

* token ids: random real words of the bundled tokenizer's vocabulary, [CLS] ... [SEP] around each
  sequence, and the token "planet" at 3% of positions;
* every row is a sum of exactly four unit directions in the model's 384-dimensional space with
  magnitudes in [0.5, 1.5] (plus 0.02 Gaussian noise): three or four of 40 background directions,
  and on every "planet" row the planted direction ``u_planet``; on 3% of the other rows, at
  random and whatever the token, a control direction ``u_control``.

A TopK SAE (64 features, k = 4 = the number of parts per row) is trained on it with the lab's real
trainer, saved as a run, and analysed by ``analyze_run`` exactly as a collected run would be. The
features that recover the two directions (decoder cosine > 0.95) are then checked: the planted
one's top contexts are all centred on "planet", its label names "planet" and its held-out
detection score is >= 0.9; the control fires as often, on random tokens, and its label -- the best
any token can do -- scores near chance (0.4-0.6).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import db

N_SEQ, SEQ_LEN, D = 300, 64, 384
HOOK, LAYER = "mlp_out", 2


def build_planted_run(lab, rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray, int]:
    from engine.collection.models import load_model, resolve_model
    from engine.collection.store import ActivationStore, site_file, site_name
    from engine.config import ExperimentConfig
    from engine.training.data import ShuffledBatches
    from engine.training.trainer import Trainer, init_sae_from_store_stats

    tok = load_model(resolve_model("all-MiniLM-L6-v2"), torch.device("cpu")).tokenizer
    planted = tok.convert_tokens_to_ids("planet")
    words = np.array([i for i in range(2000, 3000) if i != planted])
    tokens = rng.choice(words, size=(N_SEQ, SEQ_LEN))
    tokens[:, 0], tokens[:, -1] = tok.cls_token_id, tok.sep_token_id
    keep = np.zeros(tokens.shape, dtype=bool)
    keep[:, 1:-1] = True
    tokens[keep & (rng.random(tokens.shape) < 0.03)] = planted
    seq_idx, pos_idx = np.nonzero(keep)
    n = len(seq_idx)

    def unit(k: int) -> np.ndarray:
        v = rng.standard_normal((k, D))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    background, (u_planet, u_control) = unit(40), unit(2)
    is_planet = tokens[seq_idx, pos_idx] == planted
    is_control = ~is_planet & (rng.random(n) < 0.03)
    order = np.argsort(rng.random((n, 40)), axis=1)
    active = np.zeros((n, 40), dtype=bool)
    np.put_along_axis(active, order[:, :4], True, 1)
    three = is_planet | is_control  # these rows get 3 background parts + their planted one
    active[three, order[three, 3]] = False
    acts = (rng.uniform(0.5, 1.5, (n, 40)) * active) @ background + 0.02 * rng.standard_normal((n, D))
    acts += np.outer(is_planet * rng.uniform(0.5, 1.5, n), u_planet) + np.outer(is_control * rng.uniform(0.5, 1.5, n), u_control)

    n_val = N_SEQ // 10
    val_start = int(keep[: N_SEQ - n_val].sum())
    key = "planted-test-store"
    folder = lab.activations / key
    folder.mkdir(parents=True)
    np.save(folder / "tokens.npy", tokens.astype(np.int32))
    np.save(folder / "rows.npy", np.stack([seq_idx, pos_idx], 1).astype(np.int32))
    np.save(folder / site_file(HOOK, LAYER), acts.astype(np.float16))
    train = acts[:val_start]
    meta = {"key": key, "material": {"synthetic": True}, "model": "all-MiniLM-L6-v2", "domain": "planted", "source": "synthetic",
            "seq_len": SEQ_LEN, "seed": 0, "n_sequences": N_SEQ, "n_val_sequences": n_val, "n_rows": n,
            "val_start_row": val_start,
            "d_model": D, "sites": {site_name(HOOK, LAYER): {"file": site_file(HOOK, LAYER), "hook": HOOK, "layer": LAYER,
                                                             "train_mean": train.mean(0).tolist(),
                                                             "train_mean_sq_norm": float((train**2).sum(1).mean())}}}
    (folder / "meta.json").write_text(json.dumps(meta))
    config = ExperimentConfig.from_dict({
        "hook": HOOK, "layer": LAYER,
        "data": {"domains": [{"name": "planted", "source": "file:synthetic"}], "seq_len": SEQ_LEN, "tokens_per_domain": n},
        "sae": {"d_sae": 64, "k": 4},
        "train": {"epochs": 10, "batch_size": 512, "lr": 3e-3, "dead_after_tokens": 20000},
    })
    store = ActivationStore.open(folder)
    st = store.site_stats(HOOK, LAYER)
    sae = init_sae_from_store_stats(D, config.sae, np.asarray(st["train_mean"]), st["train_mean_sq_norm"], 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-feature SAE: thread hand-offs cost more than they save
    try:
        batches = ShuffledBatches(store.acts(HOOK, LAYER), 0, val_start, config.train.batch_size, 0)
        Trainer(sae, config.sae, config.train, batches, torch.device("cpu"), 0).run(resume=False)
    finally:
        torch.set_num_threads(threads)
    run_id = "planted-run"
    run_dir = lab.run_dir(run_id)
    run_dir.mkdir(parents=True)
    sae.save(run_dir / "sae", {"run_id": run_id, "hook_name": f"{HOOK}@{LAYER}"})
    (run_dir / "config.json").write_text(json.dumps({
        "run_id": run_id, "group_id": "g-planted", "train_domain": "planted", "experiment": config.to_dict(),
        "activation_sets": {"planted": key}}))
    W = sae.W_dec.detach().numpy()
    W = W / np.linalg.norm(W, axis=1, keepdims=True)
    return run_id, W @ u_planet, W @ u_control, planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from core.lab import Lab
    from engine.analysis.analyze import analyze_run

    lab = Lab.at(tmp_path_factory.mktemp("planted") / "lab")
    run_id, cos_planet, cos_control, planted_id = build_planted_run(lab, np.random.default_rng(0))
    summary = analyze_run(lab, run_id)
    return lab, run_id, cos_planet, cos_control, summary


def _feature(lab, run_id, f):
    return db.query(lab, "SELECT * FROM features WHERE run_id = ? AND feature = ?", [run_id, f]).iloc[0]


def test_planted_token_feature_is_found_named_and_trusted(planted):
    lab, run_id, cos_planet, _, _ = planted
    f = int(np.argmax(cos_planet))
    assert cos_planet[f] > 0.95, "the SAE did not recover the planted direction"
    tops = db.query(lab, "SELECT tokens[center + 1] AS token, activation FROM feature_contexts "
                              "WHERE run_id = ? AND feature = ? AND kind = 'top' ORDER BY rank", [run_id, f])
    assert len(tops) == 20
    assert (tops["token"] == "planet").all(), tops["token"].tolist()
    row = _feature(lab, run_id, f)
    assert list(row["label_tokens"])[0] == "planet" and row["label"].startswith("planet")
    assert row["label_kind"] == "token"
    assert row["label_score"] >= 0.9
    assert row["label_precision"] >= 0.9 and row["label_recall"] >= 0.9


def test_random_direction_control_scores_near_chance(planted):
    lab, run_id, _, cos_control, _ = planted
    f = int(np.argmax(cos_control))
    assert cos_control[f] > 0.95, "the SAE did not recover the control direction"
    row = _feature(lab, run_id, f)
    assert 0.02 <= row["freq"] <= 0.05  # it fires as often as the planted feature ...
    assert row["label"] is not None and "planet" not in row["label"]
    assert 0.4 <= row["label_score"] <= 0.6  # ... but no token predicts where


def test_only_the_planted_feature_earns_a_trusted_label(planted):
    """Among all 64 features, labels scoring >= 0.9 name the planted token and nothing else."""
    lab, run_id, cos_planet, _, summary = planted
    trusted = db.query(lab, "SELECT feature, label FROM features WHERE run_id = ? AND label_score >= 0.9", [run_id])
    assert len(trusted) >= 1
    assert all(lbl.startswith("planet") for lbl in trusted["label"])
    assert summary["labels_above_0_9"] == len(trusted)


def test_the_control_label_at_chance_is_shown_as_a_guess(planted):
    """The control feature's best label scores near chance: its interval says so, every view titles it
    "no reliable label (best guess: ...)", and a card prefilled from it says low confidence."""
    from engine.analysis.queries import feature_detail, list_features
    from findings.prefill import prefill

    lab, run_id, cos_planet, cos_control, _ = planted
    control, planet = int(np.argmax(cos_control)), int(np.argmax(cos_planet))
    row = _feature(lab, run_id, control)
    assert row["label_chance"] == 0.5 and row["label_score_low"] < 0.6 and not row["label_reliable"]
    detail = feature_detail(lab, run_id, control)
    assert detail["feature"]["title"] == f"no reliable label (best guess: {row['label']})"
    listed = list_features(lab, run_id, limit=64).set_index("feature")
    assert listed.loc[control, "title"] == detail["feature"]["title"]
    card = prefill({"run_id": run_id, "hook": "mlp_out", "layer": 2}, control, detail)
    assert card["title"].startswith("no reliable label (best guess: ") and card["confidence"] == "low"
    assert card["claim"].startswith("Unconfirmed guess:")
    good = feature_detail(lab, run_id, planet)["feature"]
    assert good["label_reliable"] and good["title"] == good["label"] and good["label_score_low"] >= 0.6
