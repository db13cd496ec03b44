"""Shared fixtures: real DuckDB files in tmp_path, the real bundled model, tiny real models on disk.

Nothing here is a mock: the tiny causal models are genuine transformers models built from a config
(the offline stand-in for Pythia), saved to a folder with the bundled model's tokenizer.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import small_overrides

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs two pytest workers on two cores: one torch thread each, in this process and in every
# lab process a test starts (engine.device.cpu_threads). With two threads each, the OpenMP threads spun
# waiting for a core the other worker held: a queue test's worker ran 5x slower.
os.environ.setdefault("SAE_LAB_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", os.environ["SAE_LAB_THREADS"])


@pytest.fixture(scope="session")
def bundled_tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    from engine.collection.models import bundled_model_path

    out = tmp_path_factory.mktemp("tok")
    AutoTokenizer.from_pretrained(bundled_model_path()).save_pretrained(out)
    return out


def _tiny_model(folder: Path, kind: str, tokenizer_dir: Path, n_layers: int = 3) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPTNeoXConfig, LlamaConfig

    torch.manual_seed(0)
    vocab = 30522  # the bundled BERT tokenizer's vocabulary
    if kind == "gpt_neox":
        cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=n_layers, num_attention_heads=4,
                            intermediate_size=128, max_position_embeddings=256, bos_token_id=101, eos_token_id=102)
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=n_layers, n_head=4, n_positions=256,
                         bos_token_id=101, eos_token_id=102)
    else:
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=n_layers, num_attention_heads=4,
                          intermediate_size=128, max_position_embeddings=256, bos_token_id=101, eos_token_id=102)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_neox(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    """A tiny GPT-NeoX (Pythia's architecture) saved locally: the offline test of the Pythia path."""
    return _tiny_model(tmp_path_factory.mktemp("tiny_neox"), "gpt_neox", bundled_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_causal_models(tmp_path_factory, bundled_tokenizer_dir) -> dict[str, Path]:
    return {k: _tiny_model(tmp_path_factory.mktemp(f"tiny_{k}"), k, bundled_tokenizer_dir) for k in ("gpt2", "llama")}


@pytest.fixture
def lab(tmp_path):
    from core.lab import Lab

    return Lab.at(tmp_path / "lab")


@pytest.fixture(scope="session")
def finished_lab(tmp_path_factory, worker_id):
    """A lab holding one finished small experiment on the bundled model (prose + code), shared by read-only tests.

    Trained once per test session (~30 s): under `make test` the first of the two pytest workers to
    need it trains it into the session's shared temporary folder, under a file lock, and each worker
    then uses its own copy (two processes never open one DuckDB file)."""
    import dataclasses
    import fcntl
    import pickle

    from engine.config import build_config
    from engine.pipeline import run_experiment
    from tests.helpers import copy_lab

    own = tmp_path_factory.mktemp("finished") / "lab"
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    built, record = shared / "finished-lab", shared / "finished-lab.pickle"
    with open(shared / "finished-lab.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            import shutil

            from core.lab import Lab

            shutil.rmtree(built, ignore_errors=True)  # what a worker that failed while building left
            config = build_config(overrides=small_overrides(tokens=8000, epochs=3.0, d_sae=512, k=8) + ["layer=2", "name=small"])
            outcomes = run_experiment(config, Lab.at(built), progress=False)
            record.write_bytes(pickle.dumps((config, outcomes)))
        config, outcomes = pickle.loads(record.read_bytes())
    lab = copy_lab(built, own)
    outcomes = [dataclasses.replace(o, sae_dir=str(o.sae_dir).replace(str(built), str(own))) for o in outcomes]
    return lab, config, outcomes
