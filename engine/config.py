"""The experiment configuration: what to collect, what SAE to train, how to evaluate it.

One ``ExperimentConfig`` describes an SAE configuration (model, hook, layer, architecture, size) and
the domains it is trained and evaluated on; it expands into one *run* per training domain (one SAE
each), and the runs of one config together give the N×N transfer matrix of the seeds.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.config_base import ConfigBase, apply_override, parse_override
from core.config_bounds import bounded, seed_field
from core.errors import LabError
from engine.training.architectures import registry as architectures

DEFAULT_MODEL = "all-MiniLM-L6-v2"
HOOK_POINTS = ("mlp_out", "resid_post", "attn_out")
# The built-in architectures, as the registry lists them; what is accepted is whatever the registry
# (engine/training/architectures) holds, including architectures registered at run time.
ARCHITECTURES = tuple(architectures.BUILTIN)
MAX_D_SAE = 2**20  # ~1M latents; the memory it needs for the model's width is checked against the machine's RAM
MAX_LAYER = 1023

# Named domains every install can build offline, and the hub datasets the seeds used.
BUILTIN_DOMAINS = {
    "prose": "stdlib:prose",
    "code": "stdlib:code",
    "wikitext": "hf:wikitext:wikitext-2-raw-v1@train#text",
    "python-code": "hf:codeparrot/codeparrot-clean-valid@train#content",
}


@dataclass
class DomainSpec(ConfigBase):
    """A named text domain. ``source`` is ``stdlib:prose``, ``stdlib:code``, ``file:<path>`` (a text file
    or a folder of them) or ``hf:<dataset>[:<config>][@<split>][#<column>]``."""

    name: str
    source: str

    @classmethod
    def coerce(cls, value: Any, where: str = "domain") -> Any:
        if isinstance(value, str):
            return parse_domain(value)
        return value


def parse_domain(text: str) -> DomainSpec:
    """``prose`` | ``name=path`` | ``name=hf:dataset...`` | a path (named after the file)."""
    text = text.strip()
    if not text:
        raise LabError("empty domain name: use prose, code, wikitext, python-code, or name=path/to/texts")
    if "=" in text:
        name, source = (s.strip() for s in text.split("=", 1))
        if not name or not source:
            raise LabError(f"domain '{text}' must be name=source, e.g. legal=./texts/legal")
        if source in BUILTIN_DOMAINS:
            source = BUILTIN_DOMAINS[source]
        elif not source.startswith(("stdlib:", "hf:", "file:")):
            source = f"file:{source}"
        return DomainSpec(name=name, source=source)
    if text in BUILTIN_DOMAINS:
        return DomainSpec(name=text, source=BUILTIN_DOMAINS[text])
    if Path(text).exists():
        return DomainSpec(name=Path(text).stem or "texts", source=f"file:{text}")
    raise LabError(
        f"unknown domain '{text}': use one of {', '.join(BUILTIN_DOMAINS)}, a path to a text file or folder, "
        "or name=path"
    )


@dataclass
class DataConfig(ConfigBase):
    domains: list[DomainSpec] = field(
        default_factory=lambda: [parse_domain("prose"), parse_domain("code")]
    )
    tokens_per_domain: int = bounded(100_000, ge=1000, le=10**9)
    seq_len: int = bounded(128, ge=8, le=4096)
    val_fraction: float = bounded(0.1, gt=0.0, le=0.5)  # the seeds use 0.1
    exclude_special_tokens: bool = True
    batch_size: int = bounded(32, ge=1, le=4096)  # sequences per forward pass while collecting
    layers: list[int] | None = bounded(None, ge=0, le=MAX_LAYER)  # layers recorded in the one collection pass; None: all
    hooks: list[str] | None = None  # extra hook points recorded in the same pass (sweeps over hooks)


@dataclass
class SAEConfig(ConfigBase):
    architecture: str = "topk"  # a registered architecture: python -m engine train --help lists them
    d_sae: int = bounded(2048, ge=1, le=MAX_D_SAE)
    # k is the L0: per token (topk), on average (batchtopk, matryoshka_batchtopk), the target (jumprelu, relu)
    k: int = bounded(16, ge=1, le=MAX_D_SAE)
    # relu: the L1 coefficient (its start value when target_l0), on inputs scaled to unit mean square
    l1_coefficient: float = bounded(3.0, ge=0.0, le=1e6)
    l0_coefficient: float = bounded(1.0, ge=0.0, le=1e6)  # jumprelu: the L0 coefficient (its start value when target_l0)
    target_l0: bool = True  # relu, jumprelu: steer the coefficient so training settles at L0 = k
    bandwidth: float = bounded(1.0, gt=0.0, le=1e3)  # jumprelu: width of the STE's rectangle kernel (unit-mean-square inputs)
    # matryoshka_batchtopk: the nested dictionary sizes; None: d_sae/16, d_sae/4, all
    prefixes: list[int] | None = bounded(None, ge=1, le=MAX_D_SAE)


@dataclass
class TrainConfig(ConfigBase):
    batch_size: int = bounded(2048, ge=1, le=2**20)
    epochs: float = bounded(6.0, gt=0.0, le=10_000.0)
    lr: float | None = bounded(None, gt=0.0, le=10.0)  # None: 8 x 2e-4 / sqrt(d_sae / 2**14), for small budgets (see README)
    warmup_steps: int = bounded(20, ge=0, le=10**9)
    decay_fraction: float = bounded(0.3, ge=0.0, le=1.0)  # linear decay to zero over the last fraction of steps
    aux_k: int | None = bounded(None, ge=1, le=MAX_D_SAE)  # None: min(d_in / 2, 4k) (see the trainer)
    aux_coefficient: float = bounded(1 / 32, ge=0.0, le=1000.0)  # openai / dictionary_learning
    dead_after_tokens: int = bounded(50_000, ge=1, le=10**12)
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    log_every_steps: int = bounded(5, ge=1, le=10**9)
    checkpoint_every_seconds: float = bounded(20.0, ge=0.0, le=10**6)  # 0: after every step


@dataclass
class EvalConfig(ConfigBase):
    splice_sequences: int = bounded(16, ge=0, le=10_000)  # held-out sequences per domain run with the SAE spliced in (0: skip)
    interpretable_top_n: int = bounded(20, ge=1, le=10_000)  # top activations looked at per feature for the quality score
    interpretable_token_share: float = bounded(0.5, gt=0.0, le=1.0)  # share of those on one token for a feature to count


@dataclass
class ExperimentConfig(ConfigBase):
    name: str = "default"
    model: str = DEFAULT_MODEL
    device: str = "auto"
    hook: str = "mlp_out"
    layer: int = bounded(2, ge=0, le=MAX_LAYER)  # the model's own layer count is checked once it is resolved
    seed: int = seed_field(0)
    train_domains: list[str] | None = None  # None: one SAE per domain
    data: DataConfig = field(default_factory=DataConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def domain_names(self) -> list[str]:
        return [d.name for d in self.data.domains]

    @property
    def training_domains(self) -> list[str]:
        return list(self.train_domains) if self.train_domains else self.domain_names

    def data_layers(self, n_layers: int) -> list[int]:
        return list(range(n_layers)) if self.data.layers is None else list(self.data.layers)

    def domain(self, name: str) -> DomainSpec:
        for d in self.data.domains:
            if d.name == name:
                return d
        raise LabError(f"unknown domain '{name}': this config has {', '.join(self.domain_names)}")

    def validate(self) -> "ExperimentConfig":
        """Checks that need no model: raise a one-line LabError naming the fix.

        Each numeric setting's own range is declared on its field (``bounded``) and re-checked here
        (a value may have been set after construction); what is left are checks across settings."""
        self.check_bounds("config")
        s, d = self.sae, self.data
        arch = architectures.get(s.architecture)  # a one-line LabError naming the registered ones
        if s.k > s.d_sae:
            raise LabError(f"k = {s.k} is larger than d_sae = {s.d_sae}: use k <= d_sae")
        if self.hook not in HOOK_POINTS:
            raise LabError(f"unknown hook point '{self.hook}': use one of {', '.join(HOOK_POINTS)}")
        if not d.domains:
            raise LabError("no domains given: use e.g. --domains prose,code")
        names = self.domain_names
        if len(set(names)) != len(names):
            raise LabError(f"domain names must be unique, got {', '.join(names)}: rename one with name=source")
        for n in names:
            if not n.replace("-", "").replace("_", "").isalnum():
                raise LabError(f"domain name '{n}' may hold only letters, digits, - and _: rename it with name=source")
        for h in self.data.hooks or []:
            if h not in HOOK_POINTS:
                raise LabError(f"unknown hook point '{h}' in data.hooks: use {', '.join(HOOK_POINTS)}")
        for n in self.training_domains:
            if n not in names:
                raise LabError(f"train domain '{n}' is not among the domains {', '.join(names)}: add it to --domains")
        arch(0, s.d_sae, s.k, arch.options_from(s))  # the architecture's own checks (e.g. matryoshka prefixes)
        return self


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file; a syntax error becomes one line with the position."""
    p = Path(path)
    if not p.is_file():
        raise LabError(f"config file '{path}' does not exist: check the path")
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabError(
            f"config file '{path}' is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): fix the syntax"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"config file '{path}' is not valid TOML ({e}): fix the syntax") from None
    if not isinstance(data, dict):
        raise LabError(f"config file '{path}' must hold an object of settings, not {type(data).__name__}")
    return data


def build_config(
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Defaults, then a file, then ``--set key=value`` overrides; validated."""
    data: dict[str, Any] = dict(base or {})
    if file:
        data.update(load_config_file(file))
    for text in overrides or []:
        path, value = parse_override(text)
        apply_override(data, path, value)
    return ExperimentConfig.from_dict(data, "config").validate()
