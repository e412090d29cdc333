"""aunet.data sources: every format, streaming and resuming inside files, and bad input."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import zstandard

from aunet.data import DataConfig, prepare_data, resolve_sources
from aunet.data.sources import SourceFile, iter_docs, sniff
from tests.helpers.data import make_docs, write_jsonl, write_parquet


def all_docs(sf: SourceFile, start: int = 0, **kw) -> list[bytes]:
    return [d for d, _ in iter_docs(sf, start, **kw)]


# ---------------------------------------------------------------------------- formats
def test_every_format_yields_its_documents(tmp_path):
    texts = make_docs(12, seed=1)
    (tmp_path / "a.txt").write_text(texts[0])
    write_jsonl(tmp_path / "b.jsonl", texts[1:4])
    write_jsonl(tmp_path / "c.jsonl.zst", texts[4:8], compress=True, frames=3)  # multi-frame, like DCLM shards
    write_parquet(tmp_path / "d.parquet", texts[8:12], row_group_size=1)
    files = resolve_sources([str(tmp_path)])
    assert [f.fmt for f in files] == ["txt", "jsonl", "jsonl.zst", "parquet"]
    got = [d for f in files for d in all_docs(f)]
    assert got == [t.encode() for t in texts]


def test_blank_documents_and_null_text_are_skipped(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "one"}\n\n{"text": "   "}\n{"text": null}\n{"text": "two"}\n')
    assert all_docs(SourceFile.of(p)) == [b"one", b"two"]


def test_invalid_utf8_in_txt_is_replaced_so_bytes_and_bpe_see_the_same_text(tmp_path):
    p = tmp_path / "latin.txt"
    p.write_bytes(b"caf\xe9 au lait\n")
    (doc,) = all_docs(SourceFile.of(p))
    assert doc == "caf\ufffd au lait\n".encode()
    doc.decode("utf-8")  # valid


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.zst", "parquet"])
def test_resuming_inside_a_file_from_any_ref_gives_the_rest(tmp_path, fmt):
    texts = make_docs(23, seed=2)
    if fmt == "parquet":
        p = write_parquet(tmp_path / "x.parquet", texts, row_group_size=4)
    else:
        p = write_jsonl(tmp_path / f"x.{fmt}", texts, compress=fmt.endswith("zst"), frames=4)
    sf = SourceFile.of(p)
    pairs = list(iter_docs(sf))
    assert [d for d, _ in pairs] == [t.encode() for t in texts]
    for k in (0, 1, 5, 11, 22):
        ref = pairs[k][1]
        assert all_docs(sf, ref) == [t.encode() for t in texts[k + 1:]]


def test_parquet_streams_row_groups_without_reading_the_whole_file(tmp_path, monkeypatch):
    texts = make_docs(40, seed=3)
    sf = SourceFile.of(write_parquet(tmp_path / "x.parquet", texts, row_group_size=3))

    def refuse(*a, **k):
        raise AssertionError("read the whole table")

    monkeypatch.setattr(pq.ParquetFile, "read", refuse)
    monkeypatch.setattr(pq, "read_table", refuse)
    seen_groups = []
    real_iter = pq.ParquetFile.iter_batches

    def spy(self, *a, **k):
        seen_groups.append(list(k.get("row_groups") or []))
        return real_iter(self, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    gen = iter_docs(sf, start=30)  # row 30 lives in row group 10
    assert next(gen)[0] == texts[30].encode()
    gen.close()
    assert seen_groups == [list(range(10, 14))]


def test_oversized_txt_is_cut_at_paragraph_breaks_and_loses_nothing(tmp_path):
    paras = [f"Paragraph {i}. " + "word " * 60 + "\n\n" for i in range(80)]
    p = tmp_path / "big.txt"
    p.write_text("".join(paras))
    sf = SourceFile.of(p)
    pairs = list(iter_docs(sf, max_doc_bytes=2048))
    pieces = [d for d, _ in pairs]
    assert len(pieces) > 5
    assert all(len(d) <= 2048 for d in pieces)
    assert all(d.endswith(b"\n\n") for d in pieces[:-1])  # cut after a paragraph
    assert b"".join(pieces) == p.read_bytes()
    # resuming from the middle continues exactly
    assert [d for d, _ in iter_docs(sf, pairs[2][1], max_doc_bytes=2048)] == pieces[3:]


# ---------------------------------------------------------------------------- bad input
def test_missing_path_glob_and_empty_directory_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_sources([str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="matches nothing"):
        resolve_sources([str(tmp_path / "*.jsonl")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("hi")
    with pytest.raises(ValueError, match="holds no .txt"):
        resolve_sources([str(tmp_path / "empty")])
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported file type"):
        resolve_sources([str(tmp_path / "x.csv")])


def test_globs_and_directories_are_expanded_and_sorted(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.jsonl", ".hidden.txt", "skip.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text('{"text": "x"}' if name.endswith("jsonl") else "x")
    names = [f.path.rsplit("/", 1)[1] for f in resolve_sources([str(tmp_path)])]
    assert names == ["a.txt", "b.txt", "c.jsonl"]
    names = [f.path.rsplit("/", 1)[1] for f in resolve_sources([str(tmp_path / "*.txt")])]
    assert names == ["a.txt", "b.txt"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("plain.jsonl", b"just some prose, not json\n", r"plain\.jsonl: line 1 is not JSON"),
        ("nofield.jsonl", b'{"body": "x"}\n', r"nofield\.jsonl: line 1 has no 'text' field"),
        ("notstr.jsonl", b'{"text": 3}\n', "expected a string"),
        ("packed.jsonl", zstandard.ZstdCompressor().compress(b'{"text": "x"}\n'), "zstd-compressed"),
        ("raw.jsonl.zst", b'{"text": "not compressed"}\n', r"raw\.jsonl\.zst: named \.zst but it is not a zstd"),
        ("bin.txt", b"\x00\x01\x02binary", r"bin\.txt: named \.txt but the content is binary"),
        ("fake.parquet", b"hello, not parquet", r"fake\.parquet: named \.parquet but it is not a Parquet"),
    ],
)
def test_a_file_that_is_not_what_its_extension_says_is_refused(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        sniff(SourceFile.of(p))


def test_parquet_without_text_column_is_refused(tmp_path):
    p = write_parquet(tmp_path / "x.parquet", ["a", "b"], column="body")
    with pytest.raises(ValueError, match=r"x\.parquet: the Parquet file has no 'text' column"):
        sniff(SourceFile.of(p))
    # ... but the column can be named
    sniff(SourceFile.of(p), text_field="body")


def test_bad_line_deep_in_a_file_fails_prepare_before_anything_is_cached(tmp_path):
    texts = make_docs(30, seed=4)
    lines = [json.dumps({"text": t}) for t in texts]
    lines[25] = "{broken"
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.jsonl").write_text("\n".join(lines) + "\n")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="line 26 is not JSON"):
        prepare_data(DataConfig(sources=[str(data)], valid_bytes=2000, cache_dir=str(cache)))
    leftovers = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert leftovers == []


def test_empty_files_only_is_a_clear_error(tmp_path):
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="hold no documents"):
        prepare_data(DataConfig(sources=[str(tmp_path)], cache_dir=str(tmp_path / "cache")))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": "tokens"}, "field 'units'"),
        ({"seq_len": 0}, "field 'seq_len'"),
        ({"valid_bytes": 0}, "field 'valid_bytes'"),
        ({"bpe_vocab": 100}, "field 'bpe_vocab'"),
        ({"sources": ["default", "x.txt"]}, "field 'sources'"),
        ({"sources": [""]}, "field 'sources'"),
        ({"shuffle_docs": 0}, "field 'shuffle_docs'"),
        ({"seed": -1}, "field 'seed'"),
        ({"epochs_allowed": "yes"}, "field 'epochs_allowed'"),
    ],
)
def test_config_names_the_field_and_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


def test_config_defaults_and_round_trip():
    assert DataConfig().seq_len == 8192
    assert DataConfig(units="bpe").seq_len == 2048
    assert DataConfig().uses_default_corpus and DataConfig(sources=["default"]).uses_default_corpus
    cfg = DataConfig(sources="some/dir", units="bpe", seq_len=512)
    assert cfg.sources == ["some/dir"]
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        DataConfig.from_dict({"srcs": []})


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AUNET_CACHE", str(tmp_path / "c"))
    assert DataConfig().cache_path == tmp_path / "c"
    assert DataConfig(cache_dir=str(tmp_path / "d")).cache_path == tmp_path / "d"
