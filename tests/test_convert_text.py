"""Text, binary and lists of strings: UTF-8 bytes padded per level, cut only at character boundaries."""

from __future__ import annotations

import datasets as hd
import numpy as np
import pyarrow as pa
import pytest
from convert_helpers import arrow_columns, convert, hf_convert, hf_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

import datarax_fn as dfn
from datarax_fn import _convert as cv


def test_text_is_padded_utf8_to_the_longest_row_and_decodes():
    strings = ["", "héllo", "日本語", "a"]
    out = hf_convert({"s": strings}, {"s": hd.Value("string")})
    assert out["s"].dtype == np.uint8 and out["s"].shape == (4, 9)
    assert out["s"][1].tolist() == list("héllo".encode()) + [0, 0, 0]
    assert out["s_length"].tolist() == [0, 6, 9, 1] and dfn.decode_text(out, "s") == strings


def test_text_padding_does_not_depend_on_row_order():
    a = hf_convert({"s": ["x" * 7, "y"]}, {"s": hd.Value("string")})
    b = hf_convert({"s": ["y", "x" * 7]}, {"s": hd.Value("string")})
    assert a["s"].shape == b["s"].shape == (2, 7) and a["s"][::-1].tolist() == b["s"].tolist()


def test_text_longer_than_max_length_raises_unless_truncate():
    with pytest.raises(ValueError, match=r"'s': row 0 has length 3 > max_length 2.*truncate=True"):
        hf_convert({"s": ["abc", "c"]}, {"s": hd.Value("string")}, max_length=2)
    out = hf_convert({"s": ["abc", "c"]}, {"s": hd.Value("string")}, max_length=2, truncate=True)
    assert dfn.decode_text(out, "s") == ["ab", "c"] and out["s"].shape == (2, 2)


def test_truncate_never_cuts_inside_a_utf8_character():
    out = convert({"s": ["aé日本", "abcdé", "€€", "😀x"]}, {"s": cv.Text()}, max_length=4, truncate=True)
    assert out["s_length"].tolist() == [3, 4, 3, 4]
    assert dfn.decode_text(out, "s") == ["aé", "abcd", "€", "😀"]
    assert out["s"][0].tolist() == [97, 0xC3, 0xA9, 0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=5), st.integers(1, 9))
def test_truncated_text_is_the_longest_prefix_that_fits(strings, limit):
    out = convert({"s": strings}, {"s": cv.Text()}, max_length=limit, truncate=True)
    for s, got in zip(strings, dfn.decode_text(out, "s")):
        keep = max(i for i in range(len(s) + 1) if len(s[:i].encode()) <= limit)
        assert got == s[:keep]


def test_binary_is_kept_byte_for_byte():
    out = hf_convert({"b": [b"\x00\xff", b"\x80"]}, {"b": hd.Value("binary")})
    assert out["b"].tolist() == [[0, 255], [128, 0]] and out["b_length"].tolist() == [2, 1]


def test_lists_of_strings_pad_per_level_like_squad_answers():
    rows = {"answers": [{"text": ["ab", "cde"], "start": [1, 2]}, {"text": [], "start": []}, {"text": ["é"], "start": [3]}]}
    feats = {"answers": {"text": hd.List(hd.Value("string")), "start": hd.List(hd.Value("int32"))}}
    out = hf_convert(rows, feats, max_length={"answers.start": 2})["answers"]
    assert out["text"].dtype == np.uint8 and out["text"].shape == (3, 2, 3)
    assert out["text"][0].tolist() == [[97, 98, 0], [99, 100, 101]] and not out["text"][1].any()
    assert out["text_length"].tolist() == [2, 0, 1] and out["text_length_1"].tolist() == [[2, 3], [0, 0], [2, 0]]
    assert out["start"].tolist() == [[1, 2], [0, 0], [3, 0]] and out["start_length"].tolist() == [2, 0, 1]
    ref = [r["answers"]["text"] for r in hf_dataset(rows, feats)]
    got = [[bytes(out["text"][i, j, : out["text_length_1"][i, j]]).decode() for j in range(out["text_length"][i])]
           for i in range(3)]
    assert got == ref


def test_decode_text_gives_a_list_of_strings_per_row_for_lists_of_strings():
    rows = {"answers": [{"text": ["ab", "cde"]}, {"text": []}, {"text": ["é", "", "x"]}]}
    feats = {"answers": {"text": hd.List(hd.Value("string"))}}
    ref = [r["answers"]["text"] for r in hf_dataset(rows, feats)]
    out = hf_convert(rows, feats)
    assert dfn.decode_text(out, "answers.text") == ref == [["ab", "cde"], [], ["é", "", "x"]]
    one = {k: v[2] for k, v in out["answers"].items()}  # a record, without the batch axis
    assert dfn.decode_text(one, "text") == [["é", "", "x"]]  # a batch of one
    fixed = convert({"t": [["a", "bc"], ["", "d"]]}, {"t": cv.Sequence(cv.Text(), 2)})  # no length leaf for the list
    assert dfn.decode_text(fixed, "t") == [["a", "bc"], ["", "d"]]
    nested = convert({"t": [[["a"], ["b", "cd"]], []]}, {"t": cv.Sequence(cv.Sequence(cv.Text()))})
    assert dfn.decode_text(nested, "t") == [[["a"], ["b", "cd"]], []]
    assert dfn.decode_text({k: v[0] for k, v in convert({"s": ["hé"]}, {"s": cv.Text()}).items()}, "s") == ["hé"]


def test_lists_of_strings_take_a_max_length_per_level_and_conll_tokens_stream():
    fields = {"tokens": cv.Sequence(cv.Text())}
    with pytest.raises(ValueError, match=r"'tokens' is ragged \(2 variable-length.*max_length=\{'tokens': \(L0, L1\)\}"):
        cv.Converter(fields, static=True)
    conv = cv.Converter(fields, static=True, max_length={"tokens": (3, 4)}, truncate=True)
    out = conv({"tokens": [["EU", "rejects", "German"], ["Peter", "Blackburn"], []]})
    assert out["tokens"].shape == (3, 3, 4) and out["tokens_length"].tolist() == [3, 2, 0]
    assert out["tokens_length_1"].tolist() == [[2, 4, 4], [4, 4, 0], [0, 0, 0]]
    assert bytes(out["tokens"][0, 1]).decode() == "reje"


def test_tfds_string_tensor_columns_are_text():
    out = convert({"s": np.array([b"ab", b"c"], object), "l": [np.array([b"x", b"yz"]), np.array([], object)]},
                  {"s": cv.Text(), "l": cv.Sequence(cv.Text())})
    assert dfn.decode_text(out, "s") == ["ab", "c"]
    assert out["l"].tolist() == [[[120, 0], [121, 122]], [[0, 0], [0, 0]]] and out["l_length"].tolist() == [2, 0]


def test_chunked_arrow_text_is_read_without_combining_errors_name_the_global_row():
    arr = pa.chunked_array([pa.array(["a", "bb"]), pa.array([None], pa.string())])
    with pytest.raises(ValueError, match=r"'s': missing value \(None\) at row 12\b"):
        cv.Converter({"s": cv.Text()})({"s": arr}, row0=10)


def test_decode_text_reaches_nested_keys_and_names_missing_ones():
    out = hf_convert({"st": [{"v": "a"}, {"v": "bc"}]}, {"st": {"v": hd.Value("string")}})
    assert dfn.decode_text(out, "st.v") == ["a", "bc"] == dfn.decode_text(out["st"], "v")
    with pytest.raises(KeyError, match="s_length"):
        dfn.decode_text({"s": np.zeros((1, 2), np.uint8)}, "s")


def test_estimate_covers_the_longest_text_row():
    # The case: 20k short texts and one 100 KB document pad to 20001 x 100 KB.
    texts = ["short text"] * 20_000 + ["x" * 100_000]
    assert cv.estimate_nbytes({"t": cv.Text()}, {"t": pa.chunked_array([pa.array(texts)])}) == 20_001 * (100_000 + 4)
    small = {"t": pa.chunked_array([pa.array(["ab"] * 300 + ["y" * 5000]), pa.array(["é"])]),
             "l": pa.array([[1, 2]] * 301 + [[3, 4, 5]], pa.list_(pa.int64()))}
    fields = {"t": cv.Text(), "l": cv.Sequence(cv.Tensor((), "int64"))}
    conv = cv.Converter(fields, max_length={"l": 8})
    out = conv(small)
    real = out["t"].nbytes + out["t_length"].nbytes + out["l"].nbytes + out["l_length"].nbytes
    assert cv.estimate_nbytes(conv, small) == real


def test_arrow_columns_from_with_format_match_python_rows():
    ds = hf_dataset({"s": ["ä", "bc"]}, {"s": hd.Value("large_string")})
    assert dfn.decode_text(cv.Converter(cv.fields_from_hf(ds.features))(arrow_columns(ds)), "s") == ds["s"]


def test_truncating_long_texts_keeps_temporaries_near_the_output():
    import tracemalloc

    # 4 MB of text cut to 64 bytes a row: the old code indexed every byte (8 bytes of int64
    # each, several times over); now the temporaries are the size of the output.
    texts = pa.array(["é" * 50_000 + "x"] * 40, pa.large_string())
    lists = pa.array([["ab" * 20_000, "é" * 30_000, "c"]] * 40, pa.list_(pa.large_string()))
    conv = cv.Converter({"t": cv.Text(), "l": cv.Sequence(cv.Text())}, max_length={"t": 64, "l": (2, 8)}, truncate=True)
    tracemalloc.start()
    try:
        out = conv({"t": texts, "l": lists})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert dfn.decode_text(out, "t") == ["é" * 32] * 40
    assert dfn.decode_text(out, "l") == [["abababab", "éééé"]] * 40
    assert peak < 512 * 1024, peak  # the input is 7.6 MB


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.text(max_size=12), max_size=4), min_size=1, max_size=6), st.integers(1, 4),
       st.integers(1, 10))
def test_truncated_lists_of_strings_keep_the_prefixes_that_fit(rows, k, limit):
    out = convert({"l": rows}, {"l": cv.Sequence(cv.Text())}, max_length={"l": (k, limit)}, truncate=True)
    want = np.zeros((len(rows), k, limit), np.uint8)  # the kept bytes, zero-padded
    strings = [[] for _ in rows]
    for i, row in enumerate(rows):
        for j, text in enumerate(row[:k]):
            kept = max(c for c in range(len(text) + 1) if len(text[:c].encode()) <= limit)
            strings[i].append(text[:kept])
            want[i, j, : len(text[:kept].encode())] = list(text[:kept].encode())
    assert np.array_equal(out["l"], want) and dfn.decode_text(out, "l") == strings


def test_lists_of_empty_lists_pad_to_zero_width():
    out = convert({"l": [[b""], []]}, {"l": cv.Sequence(cv.Text(binary=True))})
    assert out["l"].shape == (2, 1, 0) and out["l_length"].tolist() == [1, 0] and out["l_length_1"].tolist() == [[0], [0]]
    out = convert({"l": [[], []]}, {"l": cv.Sequence(cv.Text())}, max_length={"l": (2, 3)}, truncate=True)
    assert out["l"].shape == (2, 2, 3) and not out["l"].any()
