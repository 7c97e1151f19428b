"""The Converter: construction-time decisions, static (streaming) mode, the transform and its spec."""

from __future__ import annotations

import datasets as hd
import jax
import numpy as np
import pyarrow as pa
import pytest
from convert_helpers import arrow_columns, hf_dataset
from hf_fixtures import png

import datarax_fn as dfn
from datarax_fn import _convert as cv


def test_static_spec_is_known_at_construction_and_every_chunk_matches_it():
    fields = {"s": cv.Text(), "l": cv.Sequence(cv.Tensor((), "int64")), "c": cv.Label(("a", "b")),
              "st": cv.Struct({"f": cv.Tensor((2,), "float64")})}
    conv = cv.Converter(fields, static=True, max_length={"s": 5, "l": 3})
    spec = conv.element_spec
    assert spec == {
        "s": jax.ShapeDtypeStruct((5,), np.uint8), "s_length": jax.ShapeDtypeStruct((), np.int32),
        "l": jax.ShapeDtypeStruct((3,), np.int32), "l_length": jax.ShapeDtypeStruct((), np.int32),
        "c": jax.ShapeDtypeStruct((), np.int32), "st": {"f": jax.ShapeDtypeStruct((2,), np.float32)},
    }
    for chunk in ({"s": ["a"], "l": [[1]], "c": [0], "st": {"f": np.zeros((1, 2))}},
                  {"s": ["abcde", ""], "l": [[1, 2, 3], []], "c": [1, 0], "st": [{"f": [1.0, 2.0]}, {"f": [3.0, 4.0]}]}):
        out = conv(chunk)
        assert jax.tree.map(lambda a: (a.shape[1:], a.dtype), out) == jax.tree.map(lambda s: (s.shape, s.dtype), spec)


def test_static_mode_refuses_ragged_leaves_without_max_length_at_construction():
    with pytest.raises(ValueError, match=r"'s' is ragged.*max_length=\{'s': L\}.*exclude_keys=\['s'\]"):
        cv.Converter({"s": cv.Text()}, static=True)
    with pytest.raises(ValueError, match=r"'rag' is ragged \(2 variable.*\(L0, L1\)"):
        cv.Converter({"rag": cv.Tensor((None, None), "float32")}, static=True)


def test_eager_spec_that_depends_on_the_data_says_so():
    with pytest.raises(ValueError, match=r"'s': its shape \(None,\) depends on the data"):
        cv.Converter({"s": cv.Text()}).element_spec


def test_options_are_type_checked():
    with pytest.raises(TypeError, match="truncate must be True or False; got 'false'"):
        cv.Converter({"s": cv.Text()}, truncate="false")
    with pytest.raises(TypeError, match="static must be True or False"):
        cv.Converter({"s": cv.Text()}, static=1)
    with pytest.raises(ValueError, match=r"max_length\['s'\] must be >= 1"):
        cv.Converter({"s": cv.Text()}, max_length={"s": 0})
    with pytest.raises(TypeError, match="max_length must be an int"):
        cv.Converter({"s": cv.Text()}, max_length=True)
    with pytest.raises(ValueError, match=r"max_length: unknown keys \['t'\]; available keys are \['s'\]"):
        cv.Converter({"s": cv.Text()}, max_length={"t": 3})
    with pytest.raises(TypeError, match="num_threads must be None or an int"):
        cv.Converter({"s": cv.Text()}, num_threads=True)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        cv.Converter({"s": cv.Text()}, num_threads=0)
    with pytest.raises(TypeError, match="image_mode must be a mode string"):
        cv.Converter({"s": cv.Text()}, image_mode=3)
    assert cv.Converter({"s": cv.Text()}, max_length=np.int64(3), static=True).element_spec["s"].shape == (3,)
    assert cv.Converter({"s": cv.Text()}, num_threads=np.int32(2)).num_threads == 2


def test_lists_of_images_and_length_clashes_are_refused_at_construction():
    with pytest.raises(ValueError, match=r"'frames': a list of images has no array form.*exclude_keys=\['frames'\]"):
        cv.Converter({"frames": cv.Sequence(cv.Image())})
    with pytest.raises(ValueError, match=r"'s': its length leaf 's_length' clashes"):
        cv.Converter({"s": cv.Text(), "s_length": cv.Tensor((), "int32")})


def tokenize(batch):
    return {"ids": [np.frombuffer(s.encode(), np.uint8).astype(np.int64) for s in batch["s"]], "s": batch["s"]}


def test_transform_sees_the_user_view_and_its_output_follows_the_rules():
    seen = {}

    def look(batch):
        seen.update(batch)
        return {"n": np.array([len(t) for t in batch["answers"]["text"]], np.int64), "img": batch["img"]}

    rows = {"answers": [{"text": ["ab", "c"]}, {"text": []}], "img": [png(np.zeros((2, 2), np.uint8))] * 2,
            "x": [[1, 2], [3]]}
    feats = {"answers": {"text": hd.List(hd.Value("string"))}, "img": hd.Image(), "x": hd.List(hd.Value("int16"))}
    ds = hf_dataset(rows, feats)
    cols = arrow_columns(ds)
    out = cv.Converter(cv.fields_from_hf(ds.features), transform=look, probe=cols)(cols)
    assert seen["answers"]["text"] == [["ab", "c"], []]
    assert seen["img"].shape == (2, 2, 2, 1) and seen["img"].dtype == np.uint8
    assert [a.tolist() for a in seen["x"]] == [[1, 2], [3]] and seen["x"][0].dtype == np.int16
    assert out["n"].dtype == np.int32 and out["n"].tolist() == [2, 0] and out["img"].shape == (2, 2, 2, 1)


def test_transform_output_spec_is_fixed_by_the_probe_in_static_mode():
    cols = {"s": pa.array(["ab", "xyz"])}
    conv = cv.Converter({"s": cv.Text()}, transform=tokenize, probe=cols, static=True, max_length={"ids": 4, "s": 8})
    assert conv.element_spec["ids"] == jax.ShapeDtypeStruct((4,), np.int32)
    out = conv(cols, row0=0)
    assert out["ids"].tolist() == [[97, 98, 0, 0], [120, 121, 122, 0]] and dfn.decode_text(out, "s") == ["ab", "xyz"]

    def flips(batch):
        return {"ids": np.zeros((len(batch["s"]), 2)) if len(batch["s"]) == 1 else tokenize(batch)["ids"]}

    conv = cv.Converter({"s": cv.Text()}, transform=flips, probe=cols, static=True, max_length={"ids": 4})
    with pytest.raises(ValueError, match=r"transform output field\(s\) \['ids'\] at rows 50..50 differ from the probe"):
        conv({"s": pa.array(["q"])}, row0=50)


def test_transform_that_changes_the_row_count_works_in_both_modes_and_marks_the_converter():
    def drop_first(batch):
        return {"s": batch["s"][1:]}

    cols = {"s": ["a", "bb", "ccc"]}
    static = cv.Converter({"s": cv.Text()}, transform=drop_first, probe=cols, static=True, max_length=4)
    assert static.changes_rows and dfn.decode_text(static(cols), "s") == ["bb", "ccc"]
    out = cv.Converter({"s": cv.Text()}, transform=drop_first, probe=cols)(cols)
    assert dfn.decode_text(out, "s") == ["bb", "ccc"]
    assert not cv.Converter({"s": cv.Text()}, transform=lambda b: b, probe=cols, static=True, max_length=4).changes_rows


def test_filter_drops_rows_before_the_transform_and_the_rules_in_both_modes():
    cols = {"s": ["a", "bb", "ccc", "dddd"], "n": np.arange(4, dtype=np.int64)}
    fields = {"s": cv.Text(), "n": cv.Tensor((), "int64")}
    seen = []

    def upper(batch):
        seen.append(batch["n"].tolist())
        return {"s": [x.upper() for x in batch["s"]], "n": batch["n"]}

    def odd(batch):
        return batch["n"] % 2 == 1

    for static in (False, True):
        seen.clear()
        conv = cv.Converter(fields, filter=odd, transform=upper, probe=cols, static=static, max_length=4)
        out = conv(cols)
        assert dfn.decode_text(out, "s") == ["BB", "DDDD"] and out["n"].tolist() == [1, 3] and conv.changes_rows
        assert seen == [[1, 3]]  # the transform saw the kept rows only, once (the probe's output is reused)
        plain = cv.Converter(fields, filter=odd, probe=cols, static=static, max_length=4)(cols)
        assert dfn.decode_text(plain, "s") == ["bb", "dddd"] and plain["n"].tolist() == [1, 3]
    empty = cv.Converter(fields, filter=lambda b: b["n"] > 9, probe=cols, static=True, max_length=4)(cols)
    assert empty["s"].shape == (0, 4) and empty["n"].shape == (0,)
    with pytest.raises(ValueError, match=r"kept none of the rows 0..3; an eager source needs at least one record"):
        cv.Converter(fields, filter=lambda b: b["n"] > 9, max_length=4)(cols)


def test_transform_flattening_a_ragged_2d_tensor_is_a_fix_that_works():
    fields = {"m": cv.Tensor((None, None), "float32")}
    col = [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0, 7.0]]]
    with pytest.raises(ValueError, match=r"max_length=\{'m': \(L0, L1\)\}"):
        cv.Converter(fields)({"m": col})

    def flatten(batch):
        return {"m": [np.concatenate([np.asarray(r, np.float32) for r in rows]) for rows in batch["m"]]}

    out = cv.Converter(fields, transform=flatten, probe={"m": col}, static=True, max_length={"m": 4})({"m": col})
    assert out["m"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 0]] and out["m_length"].tolist() == [4, 3]


def test_transform_needs_a_probe_and_a_dict():
    with pytest.raises(ValueError, match="probe="):
        cv.Converter({"s": cv.Text()}, transform=tokenize)
    with pytest.raises(TypeError, match="non-empty dict"):
        cv.Converter({"s": cv.Text()}, transform=lambda b: [1], probe={"s": ["a"]})
    with pytest.raises(TypeError, match="transform must be a function"):
        cv.Converter({"s": cv.Text()}, transform=3)


def test_transform_can_convert_an_unsupported_field():
    ds = hf_dataset({"d": ["1.5", "2.25"]}, {"d": hd.Value("string")}).cast_column("d", hd.Value("decimal128(5, 2)"))
    cols = arrow_columns(ds)
    conv = cv.Converter(cv.fields_from_hf(ds.features), transform=lambda b: {"d": np.array([float(v) for v in b["d"]])},
                        probe=cols)
    assert conv(cols)["d"].tolist() == [1.5, 2.25]


def test_eager_transform_runs_in_chunks_and_pads_over_the_whole_split():
    texts = ["x" * (i % 7) if i < 8000 else "é" * 5 for i in range(9000)]
    conv = cv.Converter({"s": cv.Text()}, transform=tokenize, probe={"s": texts[:10]}, max_length={"ids": 10})
    out = conv({"s": texts})
    assert out["s"].shape == (9000, 10) and out["s_length"][:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]
    assert out["ids"].shape == (9000, 10) and out["ids_length"][-1] == 10 and dfn.decode_text(out, "s")[-1] == "ééééé"


def test_owned_arrays_copies_foreign_buffers_and_keeps_fresh_ones():
    fresh = np.arange(4)
    foreign = np.frombuffer(bytearray(16), np.int32)
    out = cv.owned_arrays({"a": fresh, "b": {"c": foreign}})
    assert out["a"] is fresh and out["b"]["c"] is not foreign and out["b"]["c"].tolist() == [0, 0, 0, 0]
    assert out["b"]["c"].ctypes.data % 64 == 0


def test_a_transform_runs_once_per_record_when_the_probe_starts_the_data():
    # The probe that fixes the output spec used to be transformed again as part of the data:
    # 856 transform rows for a 600-record split (256 probe rows twice).
    seen: list = []

    def f(b):
        seen.extend(b["x"].tolist())
        return {"y": b["x"] * 2}

    ds = hd.Dataset.from_dict({"x": list(range(600))})
    s = dfn.from_hf(ds, streaming=False, transform=f)
    assert sorted(seen) == list(range(600))
    assert np.asarray(dfn.get_batch_at(s, 0, 600)["y"]).tolist() == [2 * i for i in range(600)]
    seen.clear()
    s = dfn.from_hf(ds, streaming=True, transform=f, chunk_size=256, num_workers=1, num_epochs=1)
    s, b = dfn.get_batch(s, 600)
    s.close()
    assert b["y"].tolist() == [2 * i for i in range(600)] and sorted(seen) == list(range(600))


def test_a_probe_that_differs_from_the_data_is_not_reused():
    cols = {"x": pa.array(np.arange(10))}
    calls: list = []

    def f(b):
        calls.append(b["x"].tolist())
        return {"y": b["x"] + 1}

    conv = cv.Converter({"x": cv.Tensor((), "int64")}, transform=f, probe={"x": pa.array([5, 6, 7])}, static=True)
    assert conv(cols, 0)["y"].tolist() == list(range(1, 11))
    assert calls == [[5, 6, 7], list(range(10))]
    same = cv.Converter({"x": cv.Tensor((), "int64")}, transform=f, probe={"x": cols["x"].slice(0, 4)}, static=True)
    calls.clear()
    assert same(cols, 0)["y"].tolist() == list(range(1, 11))
    assert same(cols, 0)["y"].tolist() == list(range(1, 11))  # the probe serves the first call only
    assert calls == [list(range(4, 10)), list(range(10))]
