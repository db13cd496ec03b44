"""Ground-truth token concepts from the corpora's own structure, and how well a run's latents find them.

The lab's corpora carry their own labels: Python source says, through ``tokenize`` and ``ast``,
which characters are the keyword ``def``, the name being defined, an attribute, a call, a number,
a string, an operator, text two brackets deep; docstrings say, through their punctuation, which
characters are numbers, ``code``, quoted, parenthesised, or open a sentence. Those classes are
computed on the *original text* of every stored token (``texts.py`` rebuilds it and checks it
against the stored token ids), carried to tokens through the tokenizer's character offsets
(``members.py``), and scored against the run's latents on held-out tokens (``evaluate.py``:
best single latent by AUROC with precision / recall / F1, SAEBench-style k-sparse probes
against the same probes on the model's own dimensions, latents needed for 90 % recall).

Modules: ``code`` and ``prose`` (extraction), ``registry`` (the concept list and researcher
concepts from a regex or a function), ``texts`` (text of every row), ``members`` (memberships,
cached per activation set), ``evaluate`` (the scores), ``run`` (one run), ``table`` (rows).

What the tokenizer loses, and what that means here
--------------------------------------------------
Any Hugging Face *fast* tokenizer works (character offsets need one). A concept is decided on
the original characters and a token carries it when any non-whitespace character of its span
does, so nothing about the *labels* is lost; what is lost is what the *model* could see:

* **Lower-casing** (the bundled all-MiniLM-L6-v2 is an uncased BERT WordPiece tokenizer): ``None``
  and ``none``, ``True`` and ``true``, ``MyClass`` and ``myclass`` are the same token id, and a
  prose sentence start is not marked by case. The concepts still know (kw:None is the keyword;
  prose:sentence-start needs a capital): a latent can only find them from context, so these
  concepts measure context use, not a token lookup. Accents are stripped the same way.
* **Dropped whitespace** (BERT's pre-tokenizer splits on whitespace and keeps none): indentation,
  newlines and the space before a token are invisible to the model. Whitespace characters are
  never a concept's evidence; ``line-start`` (the first token of a line) and ``bracket:depth``
  are decidable only from context (the tokens before), which is the point of measuring them.
  A tokenizer that keeps whitespace inside tokens (byte-level BPE: ``Ġdef``) labels the same
  tokens, since whitespace characters are ignored when a token has other characters.
* **Split words**: ``isinstance`` -> ``is ##ins ##tance``; every piece whose span lies in the
  concept's characters carries it (all three pieces are ``builtin`` and ``call``).
* **Special tokens** ([CLS], [SEP] between packed documents) have no characters and no concepts.
"""

from engine.analysis.concepts.registry import REGISTRY, Concept, ConceptRegistry, register_function, register_regex

__all__ = ["REGISTRY", "Concept", "ConceptRegistry", "register_function", "register_regex"]
