"""Done-when 1: the untouched splice changes nothing, zeroing a silent feature changes nothing,
amplifying a feature moves the output monotonically -- on a tiny causal LM and on the bundled
encoder, with real models and SAEs trained by the engine."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from engine.interventions import Edit, InterventionOptions, InterventionSpec, prepare_run, run_intervention
from engine.interventions.edit import apply_edits, edited, spliced_reference
from engine.interventions.run import generate_ids
from engine.interventions.session import get_session
from tests.engine.interventions.helpers import CAUSAL_TEXT, ENCODER_TEXT, strongest_and_silent

FAST = InterventionOptions(generate_tokens=0, ce_sequences=0, neighbour_corpus=0)


def _run(fx, edits, text, options=FAST):
    return run_intervention(fx.lab, InterventionSpec(fx.run_id, edits, text=text, options=options), store=False)


@pytest.fixture(scope="module")
def enc(encoder_run):
    s = prepare_run(encoder_run.lab, encoder_run.run_id, device="cpu")
    assert s is get_session(encoder_run.lab, encoder_run.run_id, "cpu") and s._corpus  # loaded once, references warm
    return encoder_run, s, *strongest_and_silent(s, ENCODER_TEXT)


@pytest.fixture(scope="module")
def causal(causal_run):
    s = get_session(causal_run.lab, causal_run.run_id, "cpu")
    return causal_run, s, *strongest_and_silent(s, CAUSAL_TEXT)


def test_the_edit_is_the_splice_reconstruction_plus_error(enc):
    """x + sum_j (f'_j - f_j) W_dec[j] equals x_hat(f') + (x - x_hat(f)) computed literally, and an
    untouched splice returns x bit for bit."""
    fx, s, strong, silent = enc
    store = s.stores["prose"]
    x = torch.from_numpy(np.asarray(store.acts(fx.config.hook, fx.config.layer)[:256], dtype=np.float32))
    assert torch.equal(apply_edits(s.sae, x, []), x)
    assert torch.equal(apply_edits(s.sae, x, [Edit(strong, "scale", 1.0)]), x)
    for edits in ([Edit(strong, "zero")], [Edit(strong, "scale", 3.0)], [Edit(silent, "clamp", 5.0), Edit(strong, "zero")]):
        ours, literal = apply_edits(s.sae, x, edits), spliced_reference(s.sae, x, edits)
        assert torch.allclose(ours, literal, atol=1e-4 * float(x.abs().max()), rtol=0)
        assert not torch.equal(ours, x)


@pytest.mark.parametrize("edits", [[], "scale1"], ids=["no-edit", "scale-by-1"])
def test_encoder_untouched_splice_changes_nothing(enc, edits):
    fx, s, strong, _ = enc
    edits = [] if edits == [] else [Edit(strong, "scale", 1.0)]
    r = _run(fx, edits, ENCODER_TEXT, InterventionOptions(neighbour_corpus=16))
    assert r.cosine_shift < 1e-6 and max(r.shift_per_position) < 1e-6
    assert r.neighbours["overlap"] == 1.0 and r.neighbours["spearman"] == pytest.approx(1.0)
    assert r.token_movers == {"up": [], "down": []}
    assert r.n_edited_positions == sum(r.edited_mask) == len(r.tokens) - 2  # [CLS] and [SEP] stay clean
    assert not r.edited_mask[0] and not r.edited_mask[-1]


def test_encoder_zeroing_a_feature_that_did_not_fire_changes_nothing(enc):
    fx, s, _, silent = enc
    r = _run(fx, [Edit(silent, "zero")], ENCODER_TEXT)
    assert r.cosine_shift < 1e-6
    assert r.feature_acts[str(silent)]["fired_positions"] == 0
    assert any("does not fire" in n for n in r.notes)
    clamp = _run(fx, [Edit(silent, "clamp", 5.0)], ENCODER_TEXT)  # clamp switches it on everywhere
    assert clamp.cosine_shift > 1e-6


def test_encoder_amplifying_a_feature_is_monotone_in_the_factor(enc):
    fx, s, strong, _ = enc
    shifts = [_run(fx, [Edit(strong, "scale", k)], ENCODER_TEXT, InterventionOptions(neighbour_corpus=16)).cosine_shift
              for k in (1, 2, 4, 8)]
    assert shifts[0] < 1e-6
    assert all(a < b for a, b in zip(shifts, shifts[1:])), shifts
    r = _run(fx, [Edit(strong, "zero")], ENCODER_TEXT)
    assert r.cosine_shift > 1e-6 and r.token_movers["up"] and r.token_movers["down"]
    assert r.feature_acts[str(strong)]["fired_positions"] >= 1


def test_causal_untouched_splice_changes_nothing(causal):
    fx, s, strong, _ = causal
    opts = InterventionOptions(generate_tokens=6, ce_sequences=2)
    for edits in ([], [Edit(strong, "scale", 1.0)]):
        r = _run(fx, edits, CAUSAL_TEXT, opts)
        assert r.model_kind == "causal"
        assert r.kl_mean < 1e-6 and r.kl_max < 1e-6 and max(r.kl_per_position) < 1e-6
        assert set(r.delta_ce) == {"prose", "code"} and all(abs(v["delta_ce"]) < 1e-6 for v in r.delta_ce.values())
        assert r.generation.first_divergence is None and r.generation.clean_text == r.generation.edited_text


def test_causal_zeroing_a_feature_that_did_not_fire_changes_nothing(causal):
    fx, s, _, silent = causal
    r = _run(fx, [Edit(silent, "zero")], CAUSAL_TEXT)
    assert r.kl_mean < 1e-6 and r.kl_max < 1e-6


def test_causal_amplifying_a_feature_is_monotone_in_the_factor(causal):
    fx, s, strong, _ = causal
    kls = [_run(fx, [Edit(strong, "scale", k)], CAUSAL_TEXT).kl_mean for k in (1, 2, 4, 8)]
    assert kls[0] < 1e-6
    assert all(a < b for a, b in zip(kls, kls[1:])), kls
    r = _run(fx, [Edit(strong, "scale", 8.0)], CAUSAL_TEXT, InterventionOptions(generate_tokens=0, ce_sequences=2))
    assert r.token_source == "logits" and len(r.token_movers["up"]) == 10
    assert r.token_movers["up"][0]["delta"] > 0 > r.token_movers["down"][0]["delta"]
    assert all(v["delta_ce"] != 0 for v in r.delta_ce.values())


def test_generation_applies_the_edit_at_every_step(causal):
    """The cached loop's clean greedy output is transformers' own greedy output; the edited one is
    what re-running the whole sequence with the edit predicts at every step."""
    fx, s, strong, _ = causal
    prompt = s.text_ids(CAUSAL_TEXT)
    n = 8
    clean = generate_ids(s, prompt, n, None)
    ref = s.loaded.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                  max_new_tokens=n, do_sample=False, pad_token_id=0)
    assert clean == ref[0, len(prompt):].tolist()
    edits = [Edit(strong, "clamp", 50.0)]
    steered = generate_ids(s, prompt, n, edits)
    for i in range(n):
        b = s.text_batch(prompt + steered[:i])
        assert int(s.forward(b, edits)[0, -1].argmax()) == steered[i]
    a = generate_ids(s, prompt, n, edits, sample=True, seed=3)
    assert a == generate_ids(s, prompt, n, edits, sample=True, seed=3)  # same seed, same sample


def test_an_edit_only_touches_forwards_of_its_own_thread(enc):
    """The app serves sessions from threads of one process; a forward hook is global to the module."""
    fx, s, strong, _ = enc
    b = s.text_batch(s.text_ids(ENCODER_TEXT))
    clean = s.forward(b, None)
    inside, done = threading.Event(), threading.Event()
    seen: list[torch.Tensor] = []

    def other():
        inside.wait(10)
        with torch.inference_mode():
            seen.append(s.loaded.model(input_ids=b.ids, attention_mask=b.mask).last_hidden_state.float())
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with edited(s.module, s.sae, b.keep, [Edit(strong, "clamp", 100.0)]):
        inside.set()
        done.wait(10)
    t.join()
    assert torch.equal(seen[0], clean)
