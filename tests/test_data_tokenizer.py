"""aunet.data BPE: training, exact round trip, compression, loading, and the same held-out bytes as bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aunet.data.tokenizer as tokmod
from aunet.config import EOS_ID
from aunet.data import DataConfig, load_tokenizer, measure_compression, prepare_data, train_bpe
from aunet.data.tokenizer import EOS_TOKEN, PAD_TOKEN
from tests.helpers.data import make_docs, transformer_for, write_jsonl

SEQ = 128


@pytest.fixture(scope="module")
def tok():
    return train_bpe(make_docs(200, seed=11), vocab_size=400)


@pytest.fixture()
def corpus_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "a.jsonl", make_docs(40, seed=5))
    write_jsonl(d / "b.jsonl.zst", make_docs(40, seed=6), compress=True)
    return d


def cfg_for(corpus_dir, tmp_path, **kw) -> DataConfig:
    base = {"sources": [str(corpus_dir)], "units": "bpe", "seq_len": SEQ, "valid_bytes": 8000, "bpe_vocab": 400,
            "cache_dir": str(tmp_path / "cache")}
    base.update(kw)
    return DataConfig(**base)


# ---------------------------------------------------------------------------- the tokenizer itself
def test_trained_tokenizer_has_the_vocabulary_and_special_tokens(tok):
    assert tok.vocab_size == 400
    assert tok.tokenizer.id_to_token(tok.eos_id) == EOS_TOKEN
    assert tok.tokenizer.id_to_token(tok.pad_id) == PAD_TOKEN
    assert tok.eos_id != tok.pad_id


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_round_trip_is_exact_on_arbitrary_text(tok, text):
    data = text.encode("utf-8")
    assert tok.decode(tok.encode(data)) == data


@pytest.mark.parametrize("text", ["", "héllo wörld 🙂\r\n\t  ", f"a{EOS_TOKEN}b{PAD_TOKEN}c", "\x00\x7f\u2028"])
def test_special_token_text_is_ordinary_text(tok, text):
    ids = tok.encode(text.encode())
    assert tok.eos_id not in ids and tok.pad_id not in ids
    assert tok.decode(ids) == text.encode()


def test_compression_is_bytes_per_token(tok):
    docs = [d.encode() for d in make_docs(30, seed=99)]
    k = measure_compression(tok, docs)
    assert k == pytest.approx(sum(map(len, docs)) / sum(len(tok.encode(d)) for d in docs))
    assert k > 2.0  # a BPE learned on this vocabulary compresses it
    assert measure_compression(tok.tokenizer, docs) == pytest.approx(k)
    with pytest.raises(ValueError, match="empty"):
        measure_compression(tok, [])


def test_tokenizer_file_round_trips_and_bad_files_are_refused(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.tokenizer.save(str(path))
    loaded = load_tokenizer(path)
    assert loaded.eos_id == tok.eos_id and loaded.pad_id == tok.pad_id
    text = b"Sweet lord, what news?"
    assert loaded.encode(text) == tok.encode(text)

    bad = tmp_path / "bad.json"
    bad.write_text("{ this is not json")
    with pytest.raises(ValueError, match=r"bad\.json does not parse"):
        load_tokenizer(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ValueError, match=r"wrong\.json does not parse"):
        load_tokenizer(wrong)
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="eos_token 'nope'"):
        load_tokenizer(path, eos_token="nope")


def test_user_tokenizer_without_eos_or_pad(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.add_special_tokens(["</s>"])
    path = tmp_path / "t.json"
    t.save(str(path))
    loaded = load_tokenizer(path)
    assert loaded.tokenizer.id_to_token(loaded.eos_id) == "</s>"
    assert loaded.tokenizer.id_to_token(loaded.pad_id) == PAD_TOKEN  # added in memory
    assert json.loads(path.read_text())["added_tokens"][-1]["content"] == "</s>"  # file untouched

    bare = Tokenizer(models.BPE())
    bare.save(str(path))
    with pytest.raises(ValueError, match="set the data config's 'eos_token'"):
        load_tokenizer(path)


# ---------------------------------------------------------------------------- in the pipeline
def test_bpe_corpus_trains_once_caches_and_measures_k(corpus_dir, tmp_path, monkeypatch):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    assert corpus.vocab_size == 400 and corpus.units == "bpe"
    held = corpus.heldout_docs()
    assert corpus.bytes_per_unit == pytest.approx(measure_compression(corpus.tokenizer, held))
    assert corpus.bytes_per_unit > 2.0
    # trained on the training split only: the held-out text never went in
    texts = "".join(corpus.train_texts(10**9)).encode()
    assert all(h not in texts for h in held)

    def refuse(*a, **k):
        raise AssertionError("retrained instead of using the cache")

    monkeypatch.setattr(tokmod, "train_bpe", refuse)
    again = prepare_data(cfg_for(corpus_dir, tmp_path))
    assert again.tokenizer.tokenizer.to_str() == corpus.tokenizer.tokenizer.to_str()
    assert again.tokenizer.path.endswith(".json")


def test_bpe_and_bytes_evaluate_the_same_heldout_bytes(corpus_dir, tmp_path):
    bpe = prepare_data(cfg_for(corpus_dir, tmp_path))
    byte = prepare_data(cfg_for(corpus_dir, tmp_path, units="bytes", seq_len=512))
    assert bpe.heldout_docs() == byte.heldout_docs()
    ev_bpe, ev_byte = bpe.eval_set_for(transformer_for(bpe)), byte.eval_set_for(transformer_for(byte))
    assert ev_bpe.n_bytes == ev_byte.n_bytes == bpe.info.heldout_bytes
    assert ev_bpe.n_docs == ev_byte.n_docs
    # the BPE targets decode to exactly the byte targets (documents and their EOS)
    bpe_targets = ev_bpe.ids[:, 1:][ev_bpe.mask].tolist()
    byte_targets = ev_byte.ids[:, 1:][ev_byte.mask].tolist()
    eos = bpe.eos_id
    assert bpe_targets.count(eos) == byte_targets.count(EOS_ID) == len(bpe.heldout_docs())
    docs_bpe, cur = [], []
    for t in bpe_targets:
        if t == eos:
            docs_bpe.append(bpe.tokenizer.decode(cur))
            cur = []
        else:
            cur.append(t)
    assert docs_bpe == bpe.heldout_docs()
    assert ev_bpe.n_targets < ev_byte.n_targets  # fewer units for the same bytes
    assert 0 <= int(ev_bpe.ids.min()) and int(ev_bpe.ids.max()) < bpe.vocab_size  # padding included
    assert bpe.pad_id not in bpe_targets


def test_bpe_loader_packs_tokens_with_the_tokenizer_eos(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    loader = corpus.loader(batch_size=2)
    rows = [row.tolist() for b in loader for row in b["ids"]]
    stream = rows[0] + [t for r in rows[1:] for t in r[1:]]
    assert max(stream) < corpus.vocab_size and corpus.pad_id not in stream
    docs, cur = [], []
    for t in stream:
        if t == corpus.eos_id:
            docs.append(corpus.tokenizer.decode(cur))
            cur = []
        else:
            cur.append(t)
    expected = list(corpus.stream.iter_epoch(0, shuffle=True))
    assert docs == expected[: len(docs)] and len(docs) >= len(expected) - 1
    # exact token count for the size check
    assert corpus.train_units() == sum(len(corpus.tokenizer.encode(d)) + 1 for d in expected)
    assert len(rows) == (corpus.train_units() - 1) // SEQ // 2 * 2


def test_bad_tokenizer_fails_before_anything_is_cached(corpus_dir, tmp_path):
    bad = tmp_path / "tok.json"
    bad.write_text("not a tokenizer")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="does not parse"):
        prepare_data(cfg_for(corpus_dir, tmp_path, tokenizer=str(bad)))
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


def test_user_tokenizer_in_the_pipeline(corpus_dir, tmp_path, tok):
    path = tmp_path / "mine.json"
    tok.tokenizer.save(str(path))
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path, tokenizer=str(path)))
    assert corpus.tokenizer.path == str(path)
    assert corpus.vocab_size == tok.vocab_size
    from aunet.config import ModelConfig

    model = ModelConfig(arch="transformer", units="bpe", vocab_size=1000, dims=[32], layers=[1], head_dims=[16],
                        ffn_dims=[64], seq_len=SEQ)
    assert corpus.fit_model_config(model).vocab_size == tok.vocab_size
    with pytest.raises(ValueError, match="units"):
        prepare_data(cfg_for(corpus_dir, tmp_path, units="bytes")).fit_model_config(model)


def test_bpe_training_text_does_not_depend_on_the_seed(corpus_dir, tmp_path):
    a = prepare_data(cfg_for(corpus_dir, tmp_path, units="bytes", seed=0))
    b = prepare_data(cfg_for(corpus_dir, tmp_path, units="bytes", seed=7))
    assert list(a.train_docs()) != list(b.train_docs())  # the epoch order differs...
    assert list(a.train_texts(20_000)) == list(b.train_texts(20_000))  # ...the BPE's training text does not
    assert sum(len(t.encode()) for t in a.train_texts(20_000)) <= 20_000
