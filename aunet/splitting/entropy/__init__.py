"""BLT's entropy patching as a splitting rule: ``entropy:global:c=4``, ``entropy:monotonic:c=4``.

A small causal byte model, trained once per corpus (``python -m aunet.splitting.entropy train``) and
cached by the corpus's fingerprint, gives the entropy of each byte's prediction from the bytes
before it; a byte whose entropy (or its rise over the previous byte's) passes a threshold starts a
patch. The threshold comes from the contraction the user asks for, read off the model's entropies
on the training split (:mod:`~aunet.splitting.entropy.rule`).

Why a fixed-window MLP and not a small Transformer (BLT's): the rule decides on a threshold, so the
byte step of generation and the whole-string fast path of the data loader must compute the same
entropy to the last bit. A window of the last few bytes, table rows summed and one output layer,
can be evaluated on integer-valued weights where every sum is exact (:mod:`~aunet.splitting.entropy.model`);
its context is bounded the same way in training and in use, it costs O(1) per byte in the step,
trains in about a minute on one core, and its FLOPs are one matmul per byte, counted in the
AU-Net's F (``Rule.per_byte_flops``).
"""

from aunet.splitting.entropy.model import Shape, WindowModel
from aunet.splitting.entropy.rule import MODES, WORD_CONTRACTION, EntropyRule
from aunet.splitting.entropy.store import CorpusRef, EntropyModelError, corpus_in_use, use_corpus

__all__ = ["MODES", "WORD_CONTRACTION", "CorpusRef", "EntropyModelError", "EntropyRule", "Shape", "WindowModel",
           "corpus_in_use", "use_corpus"]
