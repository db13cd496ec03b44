"""SAELens pretrained releases by name (``--release R --sae-id S``), where the Hugging Face Hub is reachable.

SAELens knows where each release lives and how to convert it (its ``pretrained_saes.yaml`` and
per-release loaders, norm scaling factors included), so the lab asks SAELens for the SAE, has it
write its own folder layout into a temporary folder, and reads that like any SAELens folder. Offline
(``HF_HUB_OFFLINE=1`` or no network) the answer is one line saying so, before SAELens is imported.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from core.errors import LabError, first_line
from engine.imports import saelens
from engine.imports.source import SourceSAE

OFFLINE = ("--release needs the Hugging Face Hub, which is not reachable here (HF_HUB_OFFLINE is set or there is no "
           "network): download the SAE's folder on a machine with the hub and import that folder instead")


def read(release: str, sae_id: str) -> SourceSAE:
    # deferred: engine.collection.models loads torch and transformers
    from engine.collection.models import hub_reachable

    if not release or not sae_id:
        raise LabError("--release and --sae-id go together: e.g. --release gpt2-small-res-jb --sae-id blocks.8.hook_resid_pre")
    if not hub_reachable():
        raise LabError(OFFLINE)
    try:
        # deferred: sae_lens (and TransformerLens under it) takes seconds to import, and is optional
        from sae_lens import SAE
    except ImportError:
        raise LabError("--release loads SAEs through sae_lens, which is not installed: pip install sae-lens, or download the "
                       "SAE's folder and import it") from None
    try:
        sae = SAE.from_pretrained(release, sae_id, device="cpu")
    except Exception as e:  # an unknown release or id (ValueError), a download that failed
        raise LabError(f"SAELens could not load release '{release}' id '{sae_id}' ({first_line(e)[:300]}): check both names "
                       "against SAELens's pretrained SAEs table") from None
    with tempfile.TemporaryDirectory(prefix="sae-lab-release-") as tmp:
        sae.save_model(tmp)
        return saelens.read(Path(tmp), fmt="saelens-release", path_label=f"{release}/{sae_id}")
