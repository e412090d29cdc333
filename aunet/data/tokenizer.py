"""Byte-level BPE: train one with ``tokenizers`` on the training split, or load a tokenizer.json.

A trained tokenizer has a ByteLevel pre-tokenizer and decoder (every byte string has a
spelling, so any UTF-8 text round-trips exactly) and one special token, ``<|endoftext|>``,
used as the EOS between documents. Special-token strings that occur *in the text* are
encoded as ordinary text (``encode_special_tokens``), so a document can never smuggle in
an EOS and the round trip stays exact.

The compression ``k`` (bytes per token, EOS not counted) is measured on the held-out
split: the paper's 4.56 on DCLM with the LLaMa 3 tokenizer is a property of that corpus
and tokenizer, not a constant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from aunet.atomic import atomic_path, file_lock

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
#: Tried in order to find the EOS of a user tokenizer when ``eos_token`` is not given.
EOS_CANDIDATES = (EOS_TOKEN, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "<|im_end|>", "[SEP]")
#: A user tokenizer's padding token; when it has none, ``<|pad|>`` is added (in memory only).
PAD_CANDIDATES = (PAD_TOKEN, "<pad>", "[PAD]", "<|finetune_right_pad_id|>")


class BpeTokenizer:
    """A ``tokenizers.Tokenizer`` plus the ids the data pipeline needs: EOS and a PAD never in the data.

    PAD is a token of its own (``<|pad|>`` in trained tokenizers; a user tokenizer's pad
    token, or ``<|pad|>`` appended in memory), so a loss with ``ignore_index=pad_id``
    never ignores a real target such as EOS.
    """

    def __init__(self, tokenizer: Tokenizer, eos_id: int, path: str | None = None, pad_id: int | None = None):
        self.tokenizer = tokenizer
        self.tokenizer.encode_special_tokens = True
        self.eos_id = int(eos_id)
        if pad_id is None:
            pad_id = next((tokenizer.token_to_id(t) for t in PAD_CANDIDATES if tokenizer.token_to_id(t) is not None),
                          None)
        if pad_id is None:
            tokenizer.add_special_tokens([PAD_TOKEN])
            pad_id = tokenizer.token_to_id(PAD_TOKEN)
        self.pad_id = int(pad_id)
        self.path = path

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, doc: bytes | str) -> list[int]:
        """Token ids of one document (no EOS appended)."""
        text = doc if isinstance(doc, str) else doc.decode("utf-8", errors="replace")
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> bytes:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False).encode("utf-8")

    def __repr__(self) -> str:
        return f"BpeTokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id}, path={self.path!r})"


def new_bpe(vocab_size: int) -> tuple[Tokenizer, trainers.BpeTrainer]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def train_bpe(texts: Iterable[str], vocab_size: int, show_progress: bool = False) -> BpeTokenizer:
    """Train a byte-level BPE of ``vocab_size`` entries (EOS included) on ``texts``."""
    tok, trainer = new_bpe(vocab_size)
    trainer.show_progress = show_progress
    tok.train_from_iterator(texts, trainer)
    return BpeTokenizer(tok, tok.token_to_id(EOS_TOKEN))


def load_tokenizer(path: str | Path, eos_token: str | None = None) -> BpeTokenizer:
    """Load a tokenizer.json. ValueError if it is missing, does not parse, or has no EOS token."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"tokenizer file {p} does not exist; give the path of a tokenizer.json "
                         "or leave 'tokenizer' empty to train a BPE on the corpus")
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as err:  # tokenizers raises plain Exception for parse errors
        raise ValueError(f"tokenizer file {p} does not parse as a Hugging Face tokenizer.json: {err}") from None
    if eos_token is not None:
        eos_id = tok.token_to_id(eos_token)
        if eos_id is None:
            raise ValueError(f"tokenizer file {p}: eos_token {eos_token!r} is not in its vocabulary")
        return BpeTokenizer(tok, eos_id, str(p))
    for name in EOS_CANDIDATES:
        eos_id = tok.token_to_id(name)
        if eos_id is not None:
            return BpeTokenizer(tok, eos_id, str(p))
    raise ValueError(f"tokenizer file {p}: found none of the usual end-of-text tokens {EOS_CANDIDATES}; "
                     "set the data config's 'eos_token' to the token that separates documents")


def save_atomic(tok: BpeTokenizer, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tok.tokenizer.save(str(tmp))


def cached_bpe(path: str | Path, vocab_size: int, texts_factory, show_progress: bool = False) -> BpeTokenizer:
    """Load the tokenizer at ``path``, or train it on ``texts_factory()`` and save it there atomically.

    A file lock makes concurrent processes (e.g. DDP ranks) train once and share the result.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f".{path.name}.lock")):
        if path.is_file():
            try:
                return load_tokenizer(path, EOS_TOKEN)
            except ValueError:
                path.unlink()  # a corrupt cache entry: retrain
        tok = train_bpe(texts_factory(), vocab_size, show_progress)
        save_atomic(tok, path)
        return load_tokenizer(path, EOS_TOKEN)


def measure_compression(tokenizer: BpeTokenizer | Tokenizer, docs: Iterable[bytes | str]) -> float:
    """Bytes per token over ``docs`` (each encoded on its own, EOS not counted)."""
    if isinstance(tokenizer, Tokenizer):
        tokenizer = BpeTokenizer(tokenizer, 0, pad_id=0)
    n_bytes = n_tokens = 0
    for doc in docs:
        data = doc.encode("utf-8") if isinstance(doc, str) else doc
        n_bytes += len(data)
        n_tokens += len(tokenizer.encode(data))
    if n_tokens == 0:
        raise ValueError("cannot measure compression on an empty set of documents")
    return n_bytes / n_tokens
