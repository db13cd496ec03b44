"""Bring your own SAE (issue 16): SAEs trained elsewhere become runs, measured exactly as their own library measures them.

One lab for the module (a copy of the shared finished experiment: its activation sets are reused, so no
import collects anything). SAELens itself trains a small TopK SAE on the bundled model's activations
and saves it; the lab's held-out MSE / FVU / L0 of the imported run equal SAELens's own encode/decode
on the same tokens. The same for a JumpReLU SAE built with SAELens's JumpReLUSAE. sparsify and
dictionary_learning folders are written by the lab's export in those projects' documented layouts,
checked against the layouts (tensor names, shapes, config keys, and their encode formulas recomputed
here from the files), and imported again: identical outputs. Bad input is refused in one line with
the lab unchanged. Imports here skip the feature analysis (the app tests import with it).
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import db
from engine.cli import main
from engine.collection.store import ActivationStore
from engine.imports import hook_names
from engine.imports.conduct import import_sae, plan_import
from tests.helpers import copy_lab

REL = 1e-5


@pytest.fixture(scope="module")
def lab(finished_lab, tmp_path_factory):
    src, config, outcomes = finished_lab
    copy = copy_lab(src.root, tmp_path_factory.mktemp("imports") / "lab")
    db.ensure_schema(copy)  # the shared lab may predate run_imports; the snapshots below count its rows
    return copy, outcomes


@contextmanager
def one_thread():
    """SAELens's small matmuls on a loaded 2-core machine: one thread is 10x faster than two fighting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def held_out(lab, run_id: str) -> dict[str, np.ndarray]:
    """The held-out mlp_out@2 activations of every domain, as the run's evaluation read them (float16 -> float32)."""
    keys = json.loads((lab.run_dir(run_id) / "config.json").read_text())["activation_sets"]
    out = {}
    for name, key in keys.items():
        store = ActivationStore.open(lab.activations / key)
        out[name] = np.asarray(store.acts("mlp_out", 2)[store.val_start: store.n_rows], dtype=np.float32)
    return out


def train_split(lab, run_id: str, domain: str) -> np.ndarray:
    key = json.loads((lab.run_dir(run_id) / "config.json").read_text())["activation_sets"][domain]
    store = ActivationStore.open(lab.activations / key)
    return np.asarray(store.acts("mlp_out", 2)[: store.val_start], dtype=np.float32)


def saelens_metrics(sae, x: np.ndarray) -> dict[str, float]:
    """MSE, FVU (mean-centred) and L0 from SAELens's own encode/decode, summed in float64."""
    xt = torch.from_numpy(x)
    with torch.no_grad():
        f = sae.encode(xt)
        xh = sae.decode(f)
    err = (xt.double() - xh.double()).pow(2).sum()
    xd = xt.double()
    return {"mse": float(err / xd.numel()), "fvu": float(err / (xd - xd.mean(0)).pow(2).sum()),
            "l0": float((f > 0).sum(1).double().mean())}


def eval_rows(lab, run_id: str) -> dict[str, dict]:
    df = db.query(lab, "SELECT eval_domain, mse, fvu, l0 FROM eval_results WHERE run_id = ?", [run_id])
    return {r["eval_domain"]: r for r in df.to_dict("records")}


def assert_same_metrics(lab, run_id: str, expected: dict[str, dict]) -> None:
    got = eval_rows(lab, run_id)
    assert set(got) == set(expected) == {"prose", "code"}
    for domain, want in expected.items():
        for m in ("mse", "fvu", "l0"):
            assert got[domain][m] == pytest.approx(want[m], rel=REL), (domain, m, got[domain][m], want[m])


@pytest.fixture(scope="module")
def saelens_topk(lab, tmp_path_factory):
    """A TopK SAE trained by SAELens's own trainer on the prose training split, saved by SAELens."""
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is a dev requirement (make test installs it)")
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.training.sae_trainer import SAETrainer

    acts = torch.from_numpy(train_split(lab[0], lab[1][0].run_id, "prose"))
    g = torch.Generator().manual_seed(0)

    def batches():
        while True:
            perm = torch.randperm(len(acts), generator=g)
            for i in range(0, len(acts) - 255, 256):
                yield acts[perm[i: i + 256]]

    torch.manual_seed(0)
    meta = SAEMetadata(hook_name="blocks.2.hook_mlp_out", model_name="all-MiniLM-L6-v2")
    sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(d_in=384, d_sae=256, k=8, metadata=meta))
    with one_thread():
        SAETrainer(SAETrainerConfig(total_training_samples=256 * 150, train_batch_size_samples=256, lr=4e-3, lr_end=4e-3,
                                    device="cpu"), sae, batches()).fit()
    folder = tmp_path_factory.mktemp("saelens") / "topk"
    sae.save_inference_model(folder)
    return folder


def test_an_sae_trained_and_saved_by_saelens_measures_as_saelens_measures_it(lab, saelens_topk):
    from sae_lens import SAE

    lab_, outcomes = lab
    plan = plan_import(lab_, saelens_topk)
    assert (plan.source.format, plan.source.architecture, plan.hook, plan.layer, plan.source.k) == ("saelens", "topk", "mlp_out",
                                                                                                     2, 8)
    assert plan.existing is None
    out = import_sae(lab_, plan, analyze=False)
    theirs = SAE.load_from_disk(str(saelens_topk))
    expected = {d: saelens_metrics(theirs, x) for d, x in held_out(lab_, outcomes[0].run_id).items()}
    assert expected["prose"]["fvu"] < 0.9  # it learnt something, so the comparison means something
    assert_same_metrics(lab_, out.run_id, expected)
    row = db.query_rows(lab_, "SELECT status, architecture, k, hook, layer, train_domain FROM runs WHERE run_id = ?",
                        [out.run_id])[0]
    assert row == ("FINISHED", "topk", 8, "mlp_out", 2, "prose")
    prov = db.query_rows(lab_, "SELECT source_format, weights_sha256, original_config, source_hook FROM run_imports "
                               "WHERE run_id = ?", [out.run_id])[0]
    assert prov[0] == "saelens" and prov[3] == "blocks.2.hook_mlp_out"
    assert prov[2] == (saelens_topk / "cfg.json").read_text()  # verbatim
    assert not db.query_rows(lab_, "SELECT count(*) FROM step_metrics WHERE run_id = ?", [out.run_id])[0][0]
    assert db.query_rows(lab_, "SELECT count(*) FROM splice_results WHERE run_id = ?", [out.run_id])[0][0] == 2
    assert db.query_rows(lab_, "SELECT count(*) FROM run_metrics WHERE run_id = ?", [out.run_id])[0][0] == 1

    # The same file again: the existing run, nothing written (the CLI says so and names it).
    before = db.query_rows(lab_, "SELECT count(*) FROM runs")[0][0]
    again = import_sae(lab_, plan_import(lab_, saelens_topk))
    assert again.existed and again.run_id == out.run_id
    assert db.query_rows(lab_, "SELECT count(*) FROM runs")[0][0] == before


def test_reimport_from_the_cli_names_the_existing_run(lab, saelens_topk, capsys):
    lab_, _ = lab
    first = plan_import(lab_, saelens_topk)
    rid = first.existing or import_sae(lab_, first, analyze=False).run_id
    assert main(["--lab", str(lab_.root), "-q", "import", str(saelens_topk)]) == 0
    out = capsys.readouterr().out
    assert "already imported" in out and rid in out
    # Deleting the run deletes its provenance too: the same file then imports afresh.
    assert main(["--lab", str(lab_.root), "-q", "runs", "delete", rid]) == 0
    assert not db.query_rows(lab_, "SELECT count(*) FROM run_imports WHERE run_id = ?", [rid])[0][0]
    assert plan_import(lab_, saelens_topk).existing is None


def test_a_saelens_jumprelu_measures_as_saelens_measures_it(lab, saelens_topk, tmp_path):
    """A JumpReLU SAE built with SAELens's JumpReLUSAE (weights set, thresholds per latent), saved by SAELens."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from safetensors.torch import load_file

    lab_, outcomes = lab
    w = load_file(str(saelens_topk / "sae_weights.safetensors"))
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=384, d_sae=256, metadata=SAEMetadata(hook_name="blocks.2.hook_mlp_out")))
    x = torch.from_numpy(train_split(lab_, outcomes[0].run_id, "prose")[:2000])
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(w[name])
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        sae.threshold.copy_(pre.quantile(0.97, dim=0).clamp_min(0.0) + 1e-3)  # each latent fires on ~3 % of tokens
    sae.save_model(tmp_path / "jumprelu")
    plan = plan_import(lab_, tmp_path / "jumprelu")
    assert plan.source.architecture == "jumprelu" and plan.source.k is None
    out = import_sae(lab_, plan, analyze=False)
    expected = {d: saelens_metrics(sae, a) for d, a in held_out(lab_, outcomes[0].run_id).items()}
    assert 1 < expected["prose"]["l0"] < 60
    assert_same_metrics(lab_, out.run_id, expected)
    k = db.query_rows(lab_, "SELECT k FROM runs WHERE run_id = ?", [out.run_id])[0][0]
    assert k == round(eval_rows(lab_, out.run_id)["prose"]["l0"])  # no k in the source: the held-out L0
    notes = json.loads(db.query_rows(lab_, "SELECT conversion FROM run_imports WHERE run_id = ?", [out.run_id])[0][0])["notes"]
    assert any("held-out L0" in n for n in notes)

    # Exported as dictionary_learning's JumpReluAutoEncoder (which does not subtract b_dec) and read back: the same SAE.
    dl = tmp_path / "dl_jumprelu"
    assert main(["--lab", str(lab_.root), "-q", "export", out.run_id, "--format", "dictionary_learning", "--out", str(dl)]) == 0
    state = torch.load(dl / "ae.pt", weights_only=True)
    assert set(state) == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
    trainer = json.loads((dl / "config.json").read_text())["trainer"]
    assert trainer["dict_class"] == "JumpReluAutoEncoder" and trainer["activation_dim"] == 384
    xs = torch.from_numpy(held_out(lab_, outcomes[0].run_id)["code"])
    pre = xs @ state["W_enc"] + state["b_enc"]  # JumpReluAutoEncoder.encode
    f_dl = torch.relu(pre * (pre > state["threshold"]))
    with torch.no_grad():
        assert torch.allclose(f_dl, sae.encode(xs), atol=1e-4)
        assert torch.allclose(f_dl @ state["W_dec"] + state["b_dec"], sae.decode(sae.encode(xs)), atol=1e-4)
    back = plan_import(lab_, dl)  # read back (the full import of these layouts is the round-trip test's)
    assert (back.source.architecture, back.hook, back.layer, back.source.k) == ("jumprelu", "mlp_out", 2, k)
    with torch.no_grad():
        again = back.source.to_sae(k)
        # b_enc went through b_enc - b_dec W_enc and back: a pre-activation within a float32 ulp of its threshold may flip
        assert int(((again.encode(xs) > 0) != (sae.encode(xs) > 0)).sum()) <= 2
        assert torch.allclose(again(xs), sae.decode(sae.encode(xs)), atol=1e-4)


def test_sparsify_and_dictionary_learning_round_trips_are_identical(lab, tmp_path):
    from engine.artifacts import load_run_sae

    lab_, outcomes = lab
    rid = outcomes[0].run_id
    ours = load_run_sae(lab_, rid)
    x = torch.from_numpy(held_out(lab_, rid)["prose"])
    with torch.no_grad():
        f_ours, x_ours = ours.encode(x), ours(x)

    sp = tmp_path / "sparsify"
    assert main(["--lab", str(lab_.root), "-q", "export", rid, "--format", "sparsify", "--out", str(sp)]) == 0
    point = sp / hook_names.module_path("bert", "mlp_out", 2)
    assert point.name == "encoder.layer.2.output.dense"
    cfg = json.loads((point / "cfg.json").read_text())
    assert {"activation", "expansion_factor", "normalize_decoder", "num_latents", "k", "multi_topk", "skip_connection",
            "transcode", "d_in"} <= set(cfg) and (cfg["d_in"], cfg["num_latents"], cfg["k"]) == (384, 512, 8)
    from safetensors.torch import load_file

    t = load_file(str(point / "sae.safetensors"))
    assert {k: list(v.shape) for k, v in t.items()} == {"encoder.weight": [512, 384], "encoder.bias": [512],
                                                        "W_dec": [512, 384], "b_dec": [384]}
    # sparsify's encode (fused_encoder: ReLU(linear(x - b_dec)), top k) and decode, from the file alone.
    vals, idx = torch.relu(torch.nn.functional.linear(x - t["b_dec"], t["encoder.weight"], t["encoder.bias"])).topk(8)
    f_sp = torch.zeros_like(f_ours).scatter_(1, idx, vals)
    assert torch.allclose(f_sp, f_ours, atol=1e-4) and torch.allclose(f_sp @ t["W_dec"] + t["b_dec"], x_ours, atol=1e-4)

    dl = tmp_path / "dictionary_learning"
    assert main(["--lab", str(lab_.root), "-q", "export", rid, "--format", "dictionary_learning", "--out", str(dl)]) == 0
    state = torch.load(dl / "ae.pt", weights_only=True)
    assert {k: list(v.shape) for k, v in state.items()} == {"k": [], "threshold": [], "decoder.weight": [384, 512],
                                                            "encoder.weight": [512, 384], "encoder.bias": [512], "b_dec": [384]}
    trainer = json.loads((dl / "config.json").read_text())["trainer"]
    assert (trainer["dict_class"], trainer["k"], trainer["layer"]) == ("AutoEncoderTopK", 8, 2)
    # AutoEncoderTopK.encode / decode, from the file alone.
    post = torch.relu(torch.nn.functional.linear(x - state["b_dec"], state["encoder.weight"], state["encoder.bias"]))
    top = post.topk(int(state["k"]))
    f_dl = torch.zeros_like(post).scatter_(1, top.indices, top.values)
    assert torch.allclose(f_dl, f_ours, atol=1e-4)
    assert torch.allclose(torch.nn.functional.linear(f_dl, state["decoder.weight"]) + state["b_dec"], x_ours, atol=1e-4)

    original = eval_rows(lab_, rid)
    for folder, fmt in ((sp, "sparsify"), (dl, "dictionary_learning")):
        plan = plan_import(lab_, folder)
        assert (plan.source.format, plan.hook, plan.layer, plan.source.k) == (fmt, "mlp_out", 2, 8)
        back = import_sae(lab_, plan, analyze=False)
        again = load_run_sae(lab_, back.run_id)
        with torch.no_grad():
            assert torch.equal(again.encode(x) > 0, f_ours > 0)
            assert torch.allclose(again.encode(x), f_ours, atol=1e-5) and torch.allclose(again(x), x_ours, atol=1e-5)
        assert_same_metrics(lab_, back.run_id, original)


def snapshot(lab) -> tuple:
    tables = ("runs", "eval_results", "splice_results", "quality_scores", "artifacts", "run_imports", "features")
    counts = db.query_rows(lab, "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables))[0]
    return counts, sorted(p.name for p in lab.runs.iterdir()), sorted(p.name for p in lab.activations.iterdir())


def refused(lab, capsys, *args: str) -> str:
    before = snapshot(lab)
    rc = main(["--lab", str(lab.root), "-q", "import", *args])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert rc != 0 and len(err) == 1 and err[0].startswith("error: "), err
    assert snapshot(lab) == before  # nothing written
    return err[0]


def test_bad_input_is_refused_in_one_line_and_the_lab_is_unchanged(lab, tmp_path, capsys):
    lab_, outcomes = lab
    good = lab_.run_dir(outcomes[0].run_id) / "sae"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no SAE weights" in refused(lab_, capsys, str(empty))
    only_cfg = tmp_path / "only_cfg"
    only_cfg.mkdir()
    shutil.copy(good / "cfg.json", only_cfg)
    assert "no weights file" in refused(lab_, capsys, str(only_cfg))

    def variant(name: str, edit=None, weights=None) -> Path:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        if edit:
            cfg = json.loads((folder / "cfg.json").read_text())
            edit(cfg)
            (folder / "cfg.json").write_text(json.dumps(cfg))
        if weights:
            weights(folder / "sae_weights.safetensors")
        return folder

    # weights 16 wide: an SAE for another model
    from engine.training.sae import SparseAutoencoder

    narrow = tmp_path / "narrow"
    small = SparseAutoencoder(16, 64, "topk", 4)
    small.init_weights(torch.Generator().manual_seed(0))
    small.save(narrow, {"hook_name": "blocks.2.hook_mlp_out"})
    assert "16-wide" in refused(lab_, capsys, str(narrow))

    assert "architecture 'gated'" in refused(lab_, capsys, str(variant("gated", lambda c: c.update(architecture="gated"))))
    dl = tmp_path / "gated_dl"
    dl.mkdir()
    torch.save({"encoder.weight": torch.zeros(8, 384)}, dl / "ae.pt")
    (dl / "config.json").write_text(json.dumps({"trainer": {"dict_class": "GatedAutoEncoder", "layer": 2}}))
    assert "'GatedAutoEncoder'" in refused(lab_, capsys, str(dl))

    hook_z = variant("hook_z", lambda c: c["metadata"].update(hook_name="blocks.2.hook_z"))
    assert "blocks.2.hook_z" in refused(lab_, capsys, str(hook_z))
    layer9 = variant("layer9", lambda c: c["metadata"].update(hook_name="blocks.9.hook_mlp_out"))
    assert "layer 9" in refused(lab_, capsys, str(layer9))
    assert "unknown hook point 'mlp_in'" in refused(lab_, capsys, str(good), "--hook", "mlp_in", "--layer", "2")

    def truncate(p: Path) -> None:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def garble(p: Path) -> None:
        b = bytearray(p.read_bytes())
        b[8:40] = b"\x00" * 32  # the JSON header
        p.write_bytes(bytes(b))

    assert "truncated" in refused(lab_, capsys, str(variant("truncated", weights=truncate)))
    assert "not a safetensors file" in refused(lab_, capsys, str(variant("garbled", weights=garble)))
    tiny = variant("tiny", weights=lambda p: p.write_bytes(b"abc"))
    assert "truncated" in refused(lab_, capsys, str(tiny))
    dl_cut = tmp_path / "dl_cut"
    shutil.copytree(dl, dl_cut)
    (dl_cut / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoderTopK", "layer": 2}}))
    (dl_cut / "ae.pt").write_bytes((dl / "ae.pt").read_bytes()[:200])
    assert "ae.pt" in refused(lab_, capsys, str(dl_cut))


def test_a_release_offline_is_one_line(lab, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = refused(lab[0], capsys, "--release", "gpt2-small-res-jb", "--sae-id", "blocks.8.hook_resid_pre")
    assert "not reachable" in line and "HF_HUB_OFFLINE" in line


def test_saelens_normalisation_is_folded_or_refused(lab, tmp_path):
    """expected_average_only_in with the trainer's activation_scaler.json: the lab computes what SAELens computes on
    scaled inputs (x·s in, output / s); per-token rescaling cannot be fixed weights and is refused."""
    from engine.artifacts import load_run_sae

    lab_, outcomes = lab
    good = lab_.run_dir(outcomes[0].run_id) / "sae"
    folder = tmp_path / "scaled"
    shutil.copytree(good, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["normalize_activations"] = "expected_average_only_in"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="--norm-scaling-factor"):
        plan_import(lab_, folder)
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 2.5}))
    plan = plan_import(lab_, folder)
    assert any("2.5" in n for n in plan.notes)
    theirs = load_run_sae(lab_, outcomes[0].run_id)  # the same weights, applied to x·s by hand
    x = torch.from_numpy(held_out(lab_, outcomes[0].run_id)["prose"][:500])
    with torch.no_grad():
        assert torch.allclose(plan.source.to_sae(8)(x), theirs(x * 2.5) / 2.5, atol=1e-5)
    cfg["normalize_activations"] = "constant_norm_rescale"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="rescales each token"):
        plan_import(lab_, folder)


@pytest.mark.parametrize("name, model_type, expected", [
    ("blocks.2.hook_mlp_out", "bert", ("mlp_out", 2)),
    ("blocks.0.hook_resid_post", "gpt2", ("resid_post", 0)),
    ("blocks.3.hook_attn_out", "llama", ("attn_out", 3)),
    ("blocks.3.hook_resid_pre", "gpt_neox", ("resid_post", 2)),
    ("mlp_out@4", "bert", ("mlp_out", 4)),
    ("layers.2.mlp", "gpt_neox", ("mlp_out", 2)),
    ("gpt_neox.layers.2.mlp", "gpt_neox", ("mlp_out", 2)),
    ("layers.5", "llama", ("resid_post", 5)),
    ("model.layers.1.self_attn", "llama", ("attn_out", 1)),
    ("h.1.attn", "gpt2", ("attn_out", 1)),
    ("encoder.layer.2.output.dense", "bert", ("mlp_out", 2)),
    ("encoder.layer.2.attention.output.dense", "bert", ("attn_out", 2)),
    ("encoder.layer.4", "bert", ("resid_post", 4)),
    ("mlp_out_layer1", "gpt_neox", ("mlp_out", 1)),
    ("resid_out_layer3", "gpt_neox", ("resid_post", 3)),
])
def test_hook_names_map_to_the_labs_hook_points(name, model_type, expected):
    assert hook_names.from_name(name, model_type)[:2] == expected


@pytest.mark.parametrize("name", ["blocks.0.hook_resid_pre", "blocks.2.hook_z", "encoder.layer.2.attention", "embed_tokens",
                                  "layers.2.mlp.act_fn", "embed"])
def test_hook_names_the_lab_cannot_read_are_refused(name):
    from core.errors import LabError

    with pytest.raises(LabError):
        hook_names.from_name(name, "bert")


def test_dictionary_learning_names_its_hook_by_submodule_or_released_folder(tmp_path):
    from engine.imports.dictionary_learning import _hook_name

    assert _hook_name({"submodule_name": "layers.3.mlp"}, tmp_path) == "layers.3.mlp"
    released = tmp_path / "pythia-70m-deduped" / "attn_out_layer1" / "10_32768"
    assert _hook_name({"layer": 1}, released) == "attn_out_layer1"
    assert _hook_name({"layer": 0}, tmp_path / "pythia-70m-deduped" / "embed" / "10_32768") == "embed"
    assert _hook_name({"layer": 1}, tmp_path / "trainer_0") is None  # then resid_post is assumed, and said
