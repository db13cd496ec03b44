"""Bring your own SAE: read SAEs trained elsewhere, make them runs of the lab, and write the lab's runs back out.

An SAE trained with SAELens, EleutherAI's sparsify or dictionary_learning is read from the files its
project writes (each reader follows that project's own source: the tensor names, their layout, the
config keys), turned into the lab's ``SparseAutoencoder`` (whatever the source folds or scales is
folded into the weights, or refused in one line when the lab cannot reproduce it), then evaluated
and analysed exactly like a trained run. The modules:

- ``recognise``: which format a folder holds, from its file names alone;
- ``saelens``, ``sparsify``, ``dictionary_learning``, ``release``: one reader per source;
- ``source``: what every reader returns (tensors in SAELens's layout, the original config verbatim,
  the conversions applied) and the checks shared by all of them;
- ``hook_names``: TransformerLens hook names and module paths -> the lab's hook points;
- ``weights``: reading safetensors and ``ae.pt`` files, with one-line errors for damaged files;
- ``conduct``: preview and import (the checks, the evaluation, then the feature analysis);
- ``record``: what an import writes (the run's folder, and its rows in one transaction);
- ``launch``: an import in its own process, for the app;
- ``export``: any lab run as a dictionary_learning, sparsify or SAELens folder;
- ``cli``: ``python -m engine import`` and ``python -m engine export``.

Nothing here is imported by the CLI until one of its commands runs (the readers need torch).
"""
