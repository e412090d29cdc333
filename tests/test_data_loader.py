"""aunet.data split, packing and loader: EOS boundaries, held-out split, resume, sharding, size checks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aunet.config import EOS_ID, PAD_ID, ModelConfig
from aunet.data import (
    CorpusTooSmallError,
    DataConfig,
    Prefetcher,
    bits_per_byte,
    doc_key,
    prepare_data,
)
from aunet.data.corpus import spread_sample
from aunet.data.sources import iter_docs, resolve_sources
from aunet.splitting import Splitter, pool_levels
from tests.helpers.data import make_docs, transformer_for, write_jsonl, write_parquet

SEQ = 256


@pytest.fixture()
def corpus_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    docs = make_docs(70, seed=7, lo=20, hi=300)
    write_jsonl(d / "a.jsonl", docs[:20])
    write_jsonl(d / "b.jsonl.zst", docs[20:40], compress=True, frames=2)
    write_parquet(d / "c.parquet", docs[40:55], row_group_size=4)
    for i, t in enumerate(docs[55:]):
        (d / f"t{i:02d}.txt").write_text(t)
    return d


def cfg_for(corpus_dir, tmp_path, **kw) -> DataConfig:
    base = {"sources": [str(corpus_dir)], "seq_len": SEQ, "valid_bytes": 6000, "shuffle_docs": 6,
            "cache_dir": str(tmp_path / "cache")}
    base.update(kw)
    return DataConfig(**base)


def all_file_docs(corpus_dir) -> list[bytes]:
    return [d for f in resolve_sources([str(corpus_dir)]) for d, _ in iter_docs(f)]


def drain(loader, limit=10_000):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) >= limit:
            break
    return out


def stream_of(batches) -> list[int]:
    """The packed stream: sequences overlap by one unit."""
    rows = [row.tolist() for b in batches for row in b["ids"]]
    stream = list(rows[0])
    for row in rows[1:]:
        assert row[0] == stream[-1]
        stream.extend(row[1:])
    return stream


def split_docs(stream: list[int], eos: int) -> list[bytes]:
    docs, cur = [], []
    for t in stream:
        if t == eos:
            docs.append(bytes(cur))
            cur = []
        else:
            cur.append(t)
    return docs


# ---------------------------------------------------------------------------- held-out split
def test_heldout_is_the_smallest_key_prefix_reaching_the_budget(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    docs = all_file_docs(corpus_dir)
    by_key = sorted((doc_key(d), d) for d in docs if len(d) <= 6000)
    expected, total = [], 0
    for _, d in by_key:
        if total >= 6000:
            break
        expected.append(d)
        total += len(d)
    assert corpus.heldout_docs() == expected
    info = corpus.info
    assert info.heldout_bytes == total >= 6000
    assert info.documents == len(docs) and info.bytes == sum(map(len, docs))
    assert info.train_bytes == info.bytes - info.heldout_bytes


def test_heldout_ignores_seed_and_file_order(corpus_dir, tmp_path):
    a = prepare_data(cfg_for(corpus_dir, tmp_path, seed=0)).heldout_docs()
    b = prepare_data(cfg_for(corpus_dir, tmp_path, seed=123)).heldout_docs()
    # the same documents laid out differently: one JSONL file, reversed
    other = tmp_path / "other"
    other.mkdir()
    write_jsonl(other / "all.jsonl", [d.decode() for d in reversed(all_file_docs(corpus_dir))])
    c = prepare_data(cfg_for(other, tmp_path)).heldout_docs()
    assert a == b == c


def test_training_stream_never_contains_heldout_documents_even_copies(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    held = corpus.heldout_docs()
    (corpus_dir / "zz_copy.txt").write_bytes(held[0])  # a duplicate of a held-out document
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    assert corpus.heldout_docs() == held
    trained = split_docs(stream_of(drain(corpus.loader(batch_size=1))), EOS_ID)
    # every document seen is a training document; none is held out
    assert not set(trained) & set(held)
    everything = all_file_docs(corpus_dir)
    assert everything.count(held[0]) == 2
    expected_train = [d for d in everything if d not in set(held)]
    assert set(trained) <= set(expected_train)
    assert len(trained) >= len(expected_train) - 2  # only a tail shorter than a sequence is left over
    assert corpus.info.train_documents == len(expected_train)
    assert sorted(corpus.train_docs()) == sorted(expected_train)


def test_budget_too_large_or_no_small_document_is_refused(corpus_dir, tmp_path):
    with pytest.raises(ValueError, match="at most half of the corpus"):
        prepare_data(cfg_for(corpus_dir, tmp_path, valid_bytes=10**7))
    with pytest.raises(ValueError, match="no document is at most valid_bytes=10"):
        prepare_data(cfg_for(corpus_dir, tmp_path, valid_bytes=10))


# ---------------------------------------------------------------------------- packing
def test_documents_are_packed_whole_with_eos_between_them(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    batches = drain(corpus.loader(batch_size=3))
    assert all(b["ids"].shape == (3, SEQ + 1) and b["ids"].dtype == torch.long for b in batches)
    stream = stream_of(batches)
    assert PAD_ID not in stream and max(stream) == EOS_ID
    docs = split_docs(stream, EOS_ID)
    expected = list(corpus.stream.iter_epoch(0, shuffle=True))
    assert docs == expected[: len(docs)]
    assert len(docs) >= len(expected) - 2  # only the tail that does not fill a batch is dropped
    # shuffled: not the plain file order
    assert expected != list(corpus.stream.iter_epoch(0, shuffle=False))
    assert sorted(expected) == sorted(corpus.stream.iter_epoch(0, shuffle=False))


def test_one_pass_yields_every_full_sequence_then_stops(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    units = corpus.train_units()
    assert units == corpus.info.train_bytes + corpus.info.train_documents
    n_seq = (units - 1) // SEQ
    batches = drain(corpus.loader(batch_size=2))
    assert len(batches) == n_seq // 2
    assert len(drain(corpus.loader(batch_size=1))) == n_seq


def test_seed_changes_the_order_but_not_the_content(corpus_dir, tmp_path):
    a = prepare_data(cfg_for(corpus_dir, tmp_path, seed=1))
    b = prepare_data(cfg_for(corpus_dir, tmp_path, seed=2))
    da = split_docs(stream_of(drain(a.loader(batch_size=1))), EOS_ID)
    db = split_docs(stream_of(drain(b.loader(batch_size=1))), EOS_ID)
    assert da != db
    again = split_docs(stream_of(drain(prepare_data(cfg_for(corpus_dir, tmp_path, seed=1)).loader(batch_size=1))),
                       EOS_ID)
    assert da == again


# ---------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    ("batch", "world", "rank", "levels", "n", "m", "prefetch"),
    [(2, 1, 0, False, 5, 9, False), (1, 1, 0, False, 1, 40, False), (3, 2, 1, False, 4, 20, False),
     (2, 1, 0, True, 3, 3, False), (1, 1, 0, False, 1, 40, True), (3, 2, 1, False, 4, 20, True),
     (2, 1, 0, True, 3, 3, True)],
)
def test_resumed_loader_yields_exactly_the_same_batches(corpus_dir, tmp_path, batch, world, rank, levels, n, m,
                                                        prefetch):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path, epochs_allowed=True))
    splitter = Splitter(3) if levels else None

    def loader():
        made = corpus.loader(batch_size=batch, rank=rank, world_size=world, splitter=splitter)
        return Prefetcher(made) if prefetch else made

    first = loader()
    for _ in range(n):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints may store it as JSON
    expected = [next(first) for _ in range(m)]
    resumed = loader()
    resumed.load_state_dict(state)
    got = [next(resumed) for _ in range(m)]
    for e, g in zip(expected, got):
        assert e.keys() == g.keys()
        for k in e:
            assert torch.equal(e[k], g[k])


@pytest.mark.parametrize("prefetch", [False, True])
def test_resume_across_epochs_and_blocks_matches_an_uninterrupted_run(corpus_dir, tmp_path, prefetch):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path, epochs_allowed=True))
    per_epoch = corpus.train_units() // SEQ
    ref = corpus.loader(batch_size=4)
    straight = [next(ref)["ids"] for _ in range(per_epoch)]  # about 4 epochs
    assert ref.epoch >= 3
    pieces, state = [], None
    while len(pieces) < len(straight):
        # The prefetching worker has made batches past the state it reports: they must not count.
        loader = Prefetcher(corpus.loader(batch_size=4), depth=3) if prefetch else corpus.loader(batch_size=4)
        if state is not None:
            loader.load_state_dict(state)
        for _ in range(7):  # interrupted every 7 batches
            pieces.append(next(loader)["ids"])
        state = loader.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(straight, pieces))


def test_prefetching_ends_like_the_loader_and_goes_on_after_close(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    plain = corpus.loader(batch_size=2, splitter=Splitter(2))
    expected = drain(plain)
    prefetched = Prefetcher(corpus.loader(batch_size=2, splitter=Splitter(2)))
    got = [next(prefetched) for _ in range(5)]
    prefetched.close()  # the worker had made batches 6 and 7: they are made again, not lost
    got += drain(prefetched)
    assert len(got) == len(expected)
    assert all(torch.equal(a["ids"], b["ids"]) and torch.equal(a["levels"], b["levels"]) for a, b in zip(expected, got))
    assert prefetched.state_dict() == plain.state_dict()  # both stopped after the last full batch
    with pytest.raises(StopIteration):
        next(prefetched)


def test_an_error_in_the_prefetch_worker_is_raised_by_the_step(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    loader = corpus.loader(batch_size=1)
    next(loader)

    def broken(doc):
        raise OSError("disk gone")

    loader.encoder.encode = broken  # the next document cannot be read
    prefetched = Prefetcher(loader)
    with pytest.raises(OSError, match="disk gone"):
        for _ in range(100):
            next(prefetched)


def test_state_from_another_corpus_or_seed_is_refused(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    state = corpus.loader(batch_size=1).state_dict()
    other = prepare_data(cfg_for(corpus_dir, tmp_path, seed=9))
    with pytest.raises(ValueError, match="seed"):
        other.loader(batch_size=1).load_state_dict(state)
    with pytest.raises(ValueError, match="seq_len"):
        corpus.loader(batch_size=1, seq_len=SEQ * 2).load_state_dict(state)


def test_epochs_continue_the_stream_with_a_new_order(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path, epochs_allowed=True))
    loader = corpus.loader(batch_size=1)
    n_seq = 2 * corpus.train_units() // SEQ + 20  # a little into the third epoch
    docs = split_docs(stream_of([next(loader) for _ in range(n_seq)]), EOS_ID)
    epoch0 = list(corpus.stream.iter_epoch(0, shuffle=True))
    epoch1 = list(corpus.stream.iter_epoch(1, shuffle=True))
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    assert len(docs) > len(epoch0) + len(epoch1)
    assert docs[: len(epoch0) + len(epoch1)] == epoch0 + epoch1
    assert loader.epoch == 2


# ---------------------------------------------------------------------------- sharding
def test_ranks_see_disjoint_sequences_that_interleave_to_the_single_process_stream(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path, epochs_allowed=True))
    B, W, steps = 2, 3, 6
    single = corpus.loader(batch_size=1)
    global_rows = [next(single)["ids"][0] for _ in range(B * W * steps)]
    loaders = [corpus.loader(batch_size=B, rank=r, world_size=W) for r in range(W)]
    seen = {}
    for step in range(steps):
        for r, loader in enumerate(loaders):
            ids = next(loader)["ids"]
            for j in range(B):
                g = (step * B + j) * W + r
                assert torch.equal(ids[j], global_rows[g])
                seen[g] = r
    assert sorted(seen) == list(range(B * W * steps))  # each global sequence on exactly one rank
    states = [loader.state_dict() for loader in loaders]
    assert states[0] == states[1] == states[2]  # rank 0 can checkpoint for everyone


def test_bad_rank_or_batch_is_refused(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    with pytest.raises(ValueError, match="rank"):
        corpus.loader(batch_size=1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        corpus.loader(batch_size=0)


# ---------------------------------------------------------------------------- corpus size
def test_corpus_too_small_says_what_is_needed_and_offers_epochs(corpus_dir, tmp_path):
    cfg = cfg_for(corpus_dir, tmp_path)
    corpus = prepare_data(cfg)
    usable = (corpus.train_units() - 1) // SEQ * SEQ
    assert corpus.check(usable)["epochs"] == pytest.approx(1.0)
    with pytest.raises(CorpusTooSmallError) as err:
        corpus.check(usable + 1)
    msg = str(err.value)
    assert f"{usable + 1:,}" in msg and f"{usable:,}" in msg and "epochs_allowed=true" in msg
    ok = prepare_data(cfg_for(corpus_dir, tmp_path, epochs_allowed=True)).check(3 * usable)
    assert ok["epochs"] == pytest.approx(3.0)


# ---------------------------------------------------------------------------- evaluation
def test_eval_set_covers_every_heldout_byte_once(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    ev = corpus.eval_set_for(transformer_for(corpus, seq_len=100))
    held = corpus.heldout_docs()
    targets = ev.ids[:, 1:][ev.mask].tolist()
    assert split_docs(targets, EOS_ID) == held
    assert targets.count(EOS_ID) == len(held)
    assert ev.n_targets == len(targets) == sum(len(d) + 1 for d in held)
    assert ev.n_bytes == sum(map(len, held)) == int(ev.seq_bytes.sum()) == corpus.info.heldout_bytes
    assert ev.ids[:, 0].tolist()[0] == EOS_ID  # the first document is a target too
    assert bits_per_byte(ev.n_bytes * math.log(2), ev.n_bytes) == pytest.approx(1.0)


def test_heldout_batches_split_over_ranks_add_up(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    model = ModelConfig(arch="aunet", dims=[32, 64], layers=[1, 1], head_dims=[16, 16], ffn_dims=[64, 128],
                        seq_len=128)
    per_rank = [list(corpus.heldout_batches(model, 2, rank=r, world_size=3)) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1  # same number of batches everywhere
    assert sum(b["n_bytes"] for bs in per_rank for b in bs) == corpus.info.heldout_bytes
    targets = sum(len(d) + 1 for d in corpus.heldout_docs())  # every held-out byte and each document's EOS
    assert sum(int(b["target_mask"].sum()) for bs in per_rank for b in bs) == targets
    for bs in per_rank:
        for b in bs:
            for row, lv, mask in zip(b["ids"], b["levels"], b["target_mask"]):
                if mask.any():
                    assert lv.tolist() == pool_levels(row.tolist(), 2)
    capped = list(corpus.heldout_batches(model, 4, max_bytes=1))
    assert 0 < sum(b["n_bytes"] for b in capped) <= 4096  # one piece of held-out text


def test_a_capped_evaluation_samples_every_held_out_document():
    docs = [bytes([65 + i]) * 10_000 + b"\n" + bytes([97 + i]) * 10_000 for i in range(4)]
    sample = spread_sample(docs, 16_000, piece=2_000)
    assert 14_000 <= sum(map(len, sample)) <= 18_000
    assert {p[:1] for p in sample} >= {b"A", b"b", b"C", b"d"}  # beginnings and ends of every document
    assert all(p in d for p in sample for d in docs if p[:1] in d)  # pieces are verbatim held-out text
    lines = spread_sample([b"x" * 2_500 + b"\n" + b"y" * 2_500], 1, piece=4_000)
    assert lines == [b"x" * 2_500 + b"\n"]  # a piece ends at a line end when it holds one
    assert spread_sample(docs, 10**6) == docs  # under the cap: everything, whole


def test_levels_match_the_splitter_and_contraction_grows(corpus_dir, tmp_path):
    corpus = prepare_data(cfg_for(corpus_dir, tmp_path))
    batch = next(corpus.loader(batch_size=2, splitter=Splitter(3)))
    for row, lv in zip(batch["ids"], batch["levels"]):
        assert lv.tolist() == pool_levels(row.tolist(), 3)
    model = ModelConfig(arch="aunet", dims=[32, 64, 64], layers=[1, 1, 1], head_dims=[16, 16, 16],
                        ffn_dims=[64, 128, 128], seq_len=SEQ)
    c = corpus.contraction(model)
    assert c[0] == 1.0 and 3.0 < c[1] < c[2]
    plain = ModelConfig(arch="transformer", dims=[32], layers=[1], head_dims=[16], ffn_dims=[64], seq_len=SEQ)
    assert "levels" not in next(corpus.train_loader(plain, 2))
    assert corpus.train_loader(model, 2).splitter is not None


def test_blocks_continue_the_open_file_instead_of_reopening_it(tmp_path, monkeypatch):
    import aunet.data.packing as packing

    d = tmp_path / "z"
    d.mkdir()
    write_jsonl(d / "x.jsonl.zst", make_docs(60, seed=3), compress=True)
    corpus = prepare_data(DataConfig(sources=[str(d)], seq_len=64, valid_bytes=3000, shuffle_docs=2,
                                     cache_dir=str(tmp_path / "cache")))
    opened = []
    real = packing.iter_docs

    def counting(sf, start=0, *a, **k):
        opened.append(start)
        return real(sf, start, *a, **k)

    monkeypatch.setattr(packing, "iter_docs", counting)
    docs = list(corpus.train_docs(shuffle=True))
    assert len(docs) == corpus.info.train_documents > 40  # about 25 blocks of 2 documents
    assert opened == [0]
