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
def finished_lab(tmp_path_factory):
    """A lab holding one finished small experiment on the bundled model (prose + code), shared by read-only tests."""
    from core.lab import Lab
    from engine.config import build_config
    from engine.pipeline import run_experiment

    lab = Lab.at(tmp_path_factory.mktemp("finished") / "lab")
    config = build_config(overrides=small_overrides(tokens=8000, epochs=3.0, d_sae=512, k=8) + ["layer=2", "name=small"])
    outcomes = run_experiment(config, lab, progress=False)
    return lab, config, outcomes


# The longest files, first: `make test` hands whole files to its two workers in collection order
# (`--dist loadfile`), so a file of several minutes collected last (the browser walk sorts late) ran
# alone at the end while the other worker sat idle. Started first, they overlap the many short files.
LONGEST_FIRST = ("tests/lab_app/test_browser.py", "tests/engine/sweeps/test_ray_cluster.py",
                 "tests/engine/sweeps/test_queue.py", "tests/engine/sweeps/test_ray_local.py",
                 "tests/engine/test_disk_full.py", "tests/engine/test_cli.py")


def pytest_collection_modifyitems(session, config, items) -> None:
    def rank(item) -> int:
        path = Path(str(item.fspath)).relative_to(Path(__file__).parent.parent).as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
