"""EleutherAI lm-evaluation-harness adapter: any of our checkpoints as an ``lm_eval`` model.

Importing this module needs ``lm_eval`` (``pip install lm_eval``; its core does not
require torch, so it leaves the CPU torch alone). It registers the model name
``aunet``::

    import lm_eval
    from aunet.eval.harness import AUNetLM
    lm = AUNetLM(checkpoint="outputs/runs/aunet2_tiny/...")      # a run directory or model.pt
    lm_eval.simple_evaluate(model=lm, tasks=["my_local_task"], task_manager=...)

or ``python -m aunet.eval harness checkpoint=<run> tasks=[t1,t2] include_path=<dir of task YAMLs>``.

All three request types go through the same scorer as ``aunet.eval`` (text in; byte
models read ``EOS + context + continuation``, BPE models tokenise the two separately):

- ``loglikelihood``: (log-probability, is-greedy) of each continuation;
- ``loglikelihood_rolling``: log-probability of a whole string given EOS, in windows
  of the model's ``seq_len`` units, each unit predicted once with as much context as fits;
- ``generate_until``: greedy cached generation, cut at the first stop string (or
  sampled, with ``do_sample``/``temperature``); ``max_gen_toks`` counts model units
  (bytes for byte models; for BPE models, 4 bytes per token of budget).
"""

from __future__ import annotations

from typing import Any

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("aunet.eval.harness needs EleutherAI's lm-evaluation-harness: `pip install lm_eval` "
                      "(its core does not pull torch)") from err

from aunet.eval.codec import encode, is_bpe, pad_id, prefix_id
from aunet.eval.generation import greedy_generations
from aunet.eval.loading import load_checkpoint
from aunet.eval.scoring import DEFAULT_BATCH_UNITS, max_len, score_ids, score_pairs
from aunet.generate import generate, step_threads

BYTES_PER_TOKEN_BUDGET = 4


def rolling_windows(units: list[int], prefix: int, width: int) -> list[tuple[list[int], list[int]]]:
    """(context, targets) windows that predict every unit once, each with up to ``width`` units of input.

    Unit j is predicted from ``[prefix] + units[:j]``; a window of targets [a, b) reads
    the ``width`` inputs that end just before b.
    """
    if width < 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    seq = [prefix, *units]
    out = []
    for a in range(0, len(units), width):
        b = min(a + width, len(units))
        lo = max(0, b - width)  # inputs seq[lo:b]; targets units[a:b] = seq[a + 1:b + 1]
        out.append((seq[lo:a + 1], units[a:b]))
    return out


@register_model("aunet")
class AUNetLM(LM):
    """Any AU-Net / Transformer / Mamba checkpoint of this project as an lm-eval ``LM``."""

    def __init__(self, checkpoint: str | None = None, model: Any = None, codec: Any = None, device: str = "cpu",
                 tokenizer: str | None = None, batch_units: int | str = DEFAULT_BATCH_UNITS,
                 max_gen_toks: int | str = 256, **_: Any):
        super().__init__()
        if model is None:
            if checkpoint is None:
                raise ValueError("AUNetLM needs checkpoint=<run directory or model.pt> (or model=... in Python)")
            loaded = load_checkpoint(checkpoint, device, tokenizer)
            model, codec = loaded.model, loaded.codec
        if is_bpe(model) and codec is None:
            raise ValueError("a BPE model needs its tokenizer (codec=... or tokenizer=<tokenizer.json>)")
        self.model, self.codec = model.eval(), codec
        self.batch_units = int(batch_units)
        self.max_gen_toks = int(max_gen_toks)

    # -- lm-eval's request types ---------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(req.args)[:2] for req in requests]
        scored = [k for k, (_, cont) in enumerate(pairs) if cont]  # an empty continuation has log-probability 0
        scores = score_pairs(self.model, [pairs[k] for k in scored], self.codec, self.batch_units)
        out = [(0.0, True)] * len(pairs)
        for k, s in zip(scored, scores):
            out[k] = (-s.nll, bool(s.greedy))
        for pair, result in zip(pairs, out):
            self.cache_hook.add_partial("loglikelihood", pair, result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        prefix, width = prefix_id(self.model, self.codec), max_len(self.model)
        windows, owner = [], []
        for k, req in enumerate(requests):
            (text,) = tuple(req.args)[:1]
            for window in rolling_windows(encode(self.model, text, self.codec), prefix, width):
                windows.append(window)
                owner.append(k)
        totals = [0.0] * len(requests)
        if windows:
            for (nll, _, _), k in zip(score_ids(self.model, windows, pad_id(self.model, self.codec),
                                                self.batch_units, limit_len=width), owner):
                totals[k] -= nll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", tuple(req.args), total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        greedy: list[tuple[int, str, int, list[str]]] = []
        for k, req in enumerate(requests):
            context, kwargs = tuple(req.args)[:2]
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            budget = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            if is_bpe(self.model):
                budget *= BYTES_PER_TOKEN_BUDGET
            temperature = float(kwargs.get("temperature", 0.0) or 0.0)
            if kwargs.get("do_sample") and temperature > 0:
                with step_threads(self.model, None):
                    text = generate(self.model, context.encode("utf-8"), budget, temperature=temperature,
                                    top_k=kwargs.get("top_k"), seed=kwargs.get("seed", 0), codec=self.codec)
                out[k] = _cut(text.decode("utf-8", errors="replace"), until)
            else:
                greedy.append((k, context, budget, until))
        if greedy:
            texts = greedy_generations(self.model, [g[1] for g in greedy], [g[2] for g in greedy], self.codec)
            for (k, _, _, until), text in zip(greedy, texts):
                out[k] = _cut(text.decode("utf-8", errors="replace"), until)
        for req, text in zip(requests, out):
            self.cache_hook.add_partial("generate_until", tuple(req.args), text)
        return out  # type: ignore[return-value]


def _cut(text: str, until: list[str]) -> str:
    """Text up to the first occurrence of any stop string."""
    cut = len(text)
    for stop in until:
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def run_harness(checkpoint: str | None, tasks: list[str], limit: int | float | None = None,
                num_fewshot: int | None = None, include_path: str | None = None, include_defaults: bool = True,
                device: str = "cpu", tokenizer: str | None = None, lm: AUNetLM | None = None) -> dict:
    """``lm_eval.simple_evaluate`` on a checkpoint (or a ready ``lm``), tasks from ``include_path`` and/or lm-eval's.

    lm-eval's own task configs fetch their data from the Hugging Face hub; offline, give
    local task YAMLs (``dataset_path: json`` with ``data_files``) in ``include_path``
    and ``include_defaults=False`` (which also skips indexing lm-eval's ~10k configs).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = lm or AUNetLM(checkpoint=checkpoint, device=device, tokenizer=tokenizer)
    manager = TaskManager(include_path=include_path, include_defaults=include_defaults or not include_path)
    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=limit, num_fewshot=num_fewshot,
                                   task_manager=manager, bootstrap_iters=1000, log_samples=False)
