"""What an intervention is: typed edits of SAE features, the input they run on, and the options.

An ``Edit`` names one feature and what happens to its activation f_j at every position the SAE
edits (the positions it was trained on: special tokens stay clean):

* ``zero``  — f'_j = 0 (ablation);
* ``scale`` — f'_j = value · f_j (amplify with value > 1, damp with 0 < value < 1);
* ``clamp`` — f'_j = value, also where f_j = 0 (steering: the feature is switched on everywhere).

``InterventionSpec`` is saved with every stored result (``interventions.spec``), so a result can
be read back, re-run and compared. Bad input raises ``LabError`` with one line naming the fix.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Literal

from core.config_base import ConfigBase
from core.config_bounds import bounded, seed_field
from core.errors import LabError

OPS = ("zero", "scale", "clamp")
MAX_SEQUENCES = 64  # corpus input: sequences run in one forward pass


@dataclass
class Edit(ConfigBase):
    feature: int
    op: Literal["zero", "scale", "clamp"] = "zero"
    value: float | None = None  # the factor (scale) or the activation (clamp); unused by zero

    def validate(self, d_sae: int | None = None) -> "Edit":
        if isinstance(self.feature, bool) or not isinstance(self.feature, numbers.Integral):  # numpy ints (a DataFrame's) count
            raise LabError(f"feature {self.feature!r} is not a whole number: give a feature index, e.g. --feature 12")
        self.feature = int(self.feature)
        if d_sae is not None and not 0 <= self.feature < d_sae:
            raise LabError(f"feature {self.feature} does not exist: this run's SAE has features 0 to {d_sae - 1}")
        if self.op not in OPS:
            raise LabError(f"unknown edit '{self.op}': use zero, scale or clamp")
        if self.op == "zero":
            if self.value not in (None, 0, 0.0):
                raise LabError(f"a zero edit takes no value (got {self.value!r}): use scale or clamp to set a value")
            return self
        name = "factor" if self.op == "scale" else "clamp value"
        if self.value is None:
            raise LabError(f"a {self.op} edit needs a {name}: e.g. --{self.op} {'4' if self.op == 'scale' else '10'}")
        if isinstance(self.value, bool) or not isinstance(self.value, numbers.Real):
            raise LabError(f"the {name} {self.value!r} is not a number: give a finite number")
        if not math.isfinite(float(self.value)):
            raise LabError(f"the {name} is {self.value}: give a finite number, e.g. --{self.op} "
                           f"{'4' if self.op == 'scale' else '10'}")
        self.value = float(self.value)
        return self

    def describe(self) -> str:
        if self.op == "zero":
            return f"zero #{self.feature}"
        if self.op == "scale":
            return f"scale #{self.feature} x{self.value:g}"
        return f"clamp #{self.feature} = {self.value:g}"


@dataclass
class InterventionOptions(ConfigBase):
    # Causal LMs, text input: new tokens generated with and without the edit (0: none).
    generate_tokens: int = bounded(16, ge=0, le=512)
    sample: bool = False  # greedy (default) or sampled with a torch.Generator seeded by ``seed``
    seed: int = seed_field(0)
    temperature: float = bounded(1.0, gt=0.0, le=100.0)  # sampling only
    top_tokens: int = bounded(10, ge=0, le=10_000)  # token movers reported in each direction
    ce_sequences: int = bounded(8, ge=0, le=10_000)  # causal LMs: held-out sequences per domain for the change in CE (0: skip)
    # Encoders, text input: held-out sequences per domain ranked as neighbours (0: skip).
    neighbour_corpus: int = bounded(64, ge=0, le=100_000)
    neighbour_top: int = bounded(10, ge=0, le=10_000)  # the top-k compared for the neighbour overlap
    neighbour_moves: int = bounded(5, ge=0, le=10_000)  # biggest rank moves reported in each direction

    def validate(self) -> "InterventionOptions":
        """Every option's range is declared on its field (512 generated tokens at most: a side-by-side)."""
        return self.check_bounds("options")


@dataclass
class InterventionSpec(ConfigBase):
    """One intervention: a run, its edits, and the input (a text, or sequences of a run's corpus).

    ``edits`` may be empty: the untouched splice (reconstruction + error term), the exactness control."""

    run_id: str
    edits: list[Edit] = field(default_factory=list)
    text: str | None = None
    domain: str | None = None  # corpus input: a domain of the run ...
    sequences: list[int] = field(default_factory=list)  # ... and sequence indices in its activation set
    options: InterventionOptions = field(default_factory=InterventionOptions)
    note: str = ""

    @property
    def input_kind(self) -> str:
        return "text" if self.text is not None else "corpus"

    def validate(self, d_sae: int | None = None) -> "InterventionSpec":
        if not self.run_id or not str(self.run_id).strip():
            raise LabError("no run given: pass --run RUN (list runs with python -m engine sql \"select run_id from runs\")")
        seen: set[int] = set()
        for e in self.edits:
            e.validate(d_sae)
            if e.feature in seen:
                raise LabError(f"feature {e.feature} is edited twice: give one edit per feature")
            seen.add(e.feature)
        if self.text is not None and (self.domain is not None or self.sequences):
            raise LabError("give either a text or corpus sequences (domain + sequences), not both")
        if self.text is None:
            if self.domain is None and not self.sequences:
                raise LabError("empty text: give the intervention some text, e.g. --text \"def main():\"")
            if self.domain is None or not self.sequences:
                raise LabError("corpus input needs a domain and at least one sequence index")
            if len(self.sequences) > MAX_SEQUENCES:
                raise LabError(f"{len(self.sequences)} sequences in one intervention: give at most {MAX_SEQUENCES} (run several)")
        elif not self.text.strip():
            raise LabError("empty text: give the intervention some text, e.g. --text \"def main():\"")
        self.options.validate()
        return self

    def describe(self) -> str:
        return ", ".join(e.describe() for e in self.edits) or "no edit (untouched splice)"
