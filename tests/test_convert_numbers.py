"""Numbers, labels, time types, ragged lists, and missing values."""

from __future__ import annotations

import datetime

import datasets as hd
import jax
import numpy as np
import pyarrow as pa
import pytest
from convert_helpers import arrow_columns, convert, hf_convert, hf_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from datarax_fn import _convert as cv


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def test_int64_narrows_when_values_fit():
    out = hf_convert({"x": [0, -5, 2**31 - 1]}, {"x": hd.Value("int64")})
    assert out["x"].dtype == np.int32 and out["x"].tolist() == [0, -5, 2**31 - 1]


def test_int64_spec_is_decided_at_construction_and_overflow_names_row_value_and_fix(x64):
    jax.config.update("jax_enable_x64", False)
    ds = hf_dataset({"x": [0, 1, 2**40]}, {"x": hd.Value("int64")})
    conv = cv.Converter(cv.fields_from_hf(ds.features), static=True)
    assert conv.element_spec["x"] == jax.ShapeDtypeStruct((), np.int32)
    cols = arrow_columns(ds)
    assert conv({"x": cols["x"].slice(0, 2)})["x"].tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"'x': value 1099511627776 at row 702 .*jax_enable_x64', True\) before"):
        conv({"x": cols["x"].slice(1, 2)}, row0=701)
    jax.config.update("jax_enable_x64", True)  # the fix the error names
    conv = cv.Converter(cv.fields_from_hf(ds.features), static=True)
    out = conv(cols)
    assert conv.element_spec["x"].dtype == np.int64 and out["x"].dtype == np.int64
    assert out["x"].tolist() == [0, 1, 2**40]


def test_float64_overflow_raises_instead_of_inf_and_the_fix_works(x64):
    jax.config.update("jax_enable_x64", False)
    rows = {"f": [0.5, 1e300, float("inf"), float("nan")]}
    with pytest.raises(ValueError, match=r"'f': value 1e\+300 at row 1 .*float32.*jax_enable_x64"):
        hf_convert(rows, {"f": hd.Value("float64")})
    ok = hf_convert({"f": [0.1, float("inf"), float("nan"), -3.4e38]}, {"f": hd.Value("float64")})
    assert ok["f"].dtype == np.float32
    assert ok["f"][:2].tolist() == [np.float32(0.1), np.inf] and np.isnan(ok["f"][2])
    with pytest.raises(ValueError, match=r"value -3\.5e\+38 at row 3"):
        hf_convert({"f": [0.1, float("inf"), float("nan"), -3.5e38]}, {"f": hd.Value("float64")})
    jax.config.update("jax_enable_x64", True)
    out = hf_convert(rows, {"f": hd.Value("float64")})
    assert out["f"].dtype == np.float64 and out["f"][1] == 1e300


def test_small_dtypes_stay_declared_and_values_match_numpy_format():
    rows = {"u": [1, 255], "b": [True, False], "h": [1.5, 2.0], "i8": [-128, 127], "u32": [0, 2**32 - 1]}
    feats = {"u": hd.Value("uint8"), "b": hd.Value("bool"), "h": hd.Value("float16"), "i8": hd.Value("int8"),
             "u32": hd.Value("uint32")}
    out = hf_convert(rows, feats)
    ref = hf_dataset(rows, feats).with_format("numpy")[:]
    for k in rows:
        assert out[k].dtype == np.dtype(feats[k].dtype) and out[k].tolist() == ref[k].tolist()


def test_uint64_narrows_to_uint32_when_it_fits():
    out = hf_convert({"u": [0, 2**32 - 1]}, {"u": hd.Value("uint64")})
    assert out["u"].dtype == np.uint32 and out["u"].tolist() == [0, 2**32 - 1]
    with pytest.raises(ValueError, match=r"value 4294967296 at row 1 does not fit uint32"):
        hf_convert({"u": [0, 2**32]}, {"u": hd.Value("uint64")})


def test_array2d_uint8_keeps_dtype_and_array3d_stacks():
    rows = {"a": [np.full((2, 3), 200, np.uint8), np.zeros((2, 3), np.uint8)]}
    out = hf_convert(rows, {"a": hd.Array2D((2, 3), "uint8")})
    assert out["a"].dtype == np.uint8 and out["a"].tolist() == [[[200] * 3] * 2, [[0] * 3] * 2]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out = hf_convert({"a": [x, x + 1]}, {"a": hd.Array3D((2, 3, 4), "float32")})
    np.testing.assert_array_equal(out["a"], np.stack([x, x + 1]))


def test_fixed_shape_array_inside_a_struct_is_read_as_arrow():
    # HF's Array2D column is datasets' own ExtensionArray subclass: still an Arrow column.
    rows = {"s": [{"c0": [[1], [-2], [3]]}, {"c0": [[4], [5], [-32768]]}]}
    out = hf_convert(rows, {"s": {"c0": hd.Array2D((3, 1), "int16")}})
    assert out["s"]["c0"].dtype == np.int16 and out["s"]["c0"].tolist() == [[[1], [-2], [3]], [[4], [5], [-32768]]]
    assert list(out["s"]) == ["c0"]


def test_class_label_is_int32_allows_minus_one_and_is_range_checked():
    out = hf_convert({"c": [0, 2, -1]}, {"c": hd.ClassLabel(names=["a", "b", "c"])})
    assert out["c"].dtype == np.int32 and out["c"].tolist() == [0, 2, -1]
    with pytest.raises(ValueError, match=r"'c': label 5 at row 11 is outside \[-1, 2\)"):
        cv.Converter({"c": cv.Label(("a", "b"))})({"c": np.array([0, 5])}, row0=10)
    assert convert({"c": ["b", "a"]}, {"c": cv.Label(("a", "b"))})["c"].tolist() == [1, 0]


RAGGED = {"l": [[1], [2, 3, 4], []]}
RAGGED_F = {"l": hd.List(hd.Value("int64"))}


def test_ragged_pads_to_max_length_with_a_length_leaf():
    out = hf_convert(RAGGED, RAGGED_F, max_length={"l": 4})
    assert out["l"].tolist() == [[1, 0, 0, 0], [2, 3, 4, 0], [0, 0, 0, 0]]
    assert out["l"].dtype == np.int32 and out["l_length"].tolist() == [1, 3, 0]


def test_ragged_without_max_length_raises_naming_the_option_and_equal_rows_stack():
    with pytest.raises(ValueError, match=r"'l': rows have different lengths.*max_length=\{'l': L\}.*exclude_keys=\['l'\]"):
        hf_convert(RAGGED, RAGGED_F)
    out = hf_convert({"l": [[1, 2], [3, 4]]}, RAGGED_F)
    assert out == {"l": out["l"]} and out["l"].tolist() == [[1, 2], [3, 4]]


def test_ragged_never_truncates_silently():
    with pytest.raises(ValueError, match=r"'l': row 5 has length 3 > max_length 2.*truncate=True"):
        cv.Converter(cv.fields_from_hf(hd.Features(RAGGED_F)), max_length=2)(arrow_columns(hf_dataset(RAGGED, RAGGED_F)), row0=4)
    out = hf_convert(RAGGED, RAGGED_F, max_length=2, truncate=True)
    assert out["l"].tolist() == [[1, 0], [2, 3], [0, 0]] and out["l_length"].tolist() == [1, 2, 0]


def test_declared_ragged_rows_of_equal_length_still_pad_when_max_length_is_given():
    fields = {"seq": cv.Tensor((None,), "int32")}
    for col in ([[1, 2], [3, 4]], np.array([[1, 2], [3, 4]], np.int32)):
        out = convert({"seq": col}, fields, max_length=3)
        assert out["seq"].tolist() == [[1, 2, 0], [3, 4, 0]] and out["seq_length"].tolist() == [2, 2]


def test_nested_lists_pad_per_level_with_length_leaves_like_coco_boxes():
    rows = {"b": [[[1, 2, 3, 4]], [[5, 6, 7, 8], [9, 10, 11, 12]], []]}
    out = hf_convert(rows, {"b": hd.List(hd.List(hd.Value("float32"), length=4))}, max_length={"b": 3})
    assert out["b"].shape == (3, 3, 4) and out["b"].dtype == np.float32
    assert out["b"][1].tolist() == [[5, 6, 7, 8], [9, 10, 11, 12], [0, 0, 0, 0]]
    assert out["b_length"].tolist() == [1, 2, 0] and "b_length_1" not in out


def test_two_ragged_levels_and_the_suggested_fix_works():
    fields = {"m": cv.Tensor((None, None), "int32")}
    col = [np.array([[1, 2], [3, 4]]), np.array([[5, 6, 7]]), np.zeros((0, 0), np.int32)]
    col = [[list(r) for r in a] for a in col]
    with pytest.raises(ValueError, match=r"max_length=\{'m': \(L0, L1\)\}"):
        convert({"m": col}, fields)
    with pytest.raises(ValueError, match=r"'m' has 1 values.*2 ragged level"):
        cv.Converter(fields, max_length={"m": (2,)})
    out = convert({"m": col}, fields, max_length={"m": (2, 3)})
    assert out["m"].tolist() == [[[1, 2, 0], [3, 4, 0]], [[5, 6, 7], [0, 0, 0]], [[0] * 3] * 2]
    assert out["m_length"].tolist() == [2, 1, 0] and out["m_length_1"].tolist() == [[2, 2], [3, 0], [0, 0]]


def test_two_ragged_levels_of_only_empty_inner_lists_stacked_by_numpy():
    # TFDS data-source rows [[]] stack to an (N, 1, 0) array: no size can be inferred from it.
    out = convert({"m": np.zeros((3, 1, 0), np.int16)}, {"m": cv.Tensor((None, None), "int16")}, max_length=(2, 2))
    assert out["m"].dtype == np.int16 and out["m"].tolist() == [[[0, 0], [0, 0]]] * 3
    assert out["m_length"].tolist() == [1, 1, 1] and out["m_length_1"].tolist() == [[0, 0]] * 3


def test_list_of_structs_pushes_the_list_into_each_member():
    rows = {"ls": [[{"p": 1.0, "q": 1}], [{"p": 2.0, "q": 2}, {"p": 3.0, "q": 3}]]}
    out = hf_convert(rows, {"ls": hd.List({"p": hd.Value("float32"), "q": hd.Value("int8")})}, max_length={"ls": 3})
    assert out["ls"]["p"].tolist() == [[1, 0, 0], [2, 3, 0]] and out["ls"]["p_length"].tolist() == [1, 2]
    assert out["ls"]["q"].dtype == np.int8 and out["ls"]["q"].tolist() == [[1, 0, 0], [2, 3, 0]]


def test_time_types_are_integer_counts_in_the_declared_unit():
    t0 = datetime.datetime(2024, 1, 2, 3, 4, 5)
    rows = {"ts": [t0], "d": [datetime.date(2024, 1, 2)], "dur": [datetime.timedelta(seconds=3)],
            "d64": [datetime.date(1969, 12, 31)], "tod": [datetime.time(0, 0, 2)]}
    feats = {"ts": hd.Value("timestamp[s]"), "d": hd.Value("date32"), "dur": hd.Value("duration[us]"),
             "d64": hd.Value("date64"), "tod": hd.Value("time32[s]")}
    out = hf_convert(rows, feats)
    assert out["ts"].tolist() == [1704164645]
    assert out["d"].tolist() == [19724] and out["d64"].tolist() == [-1]
    assert out["dur"].tolist() == [3_000_000] and out["tod"].tolist() == [2]
    assert {out[k].dtype for k in ("d", "dur", "d64", "tod")} == {np.dtype(np.int32)}


def test_timestamp_beyond_int32_names_the_x64_fix(x64):
    jax.config.update("jax_enable_x64", False)
    feats = {"ts": hd.Value("timestamp[ms]")}
    t0 = datetime.datetime(2024, 1, 2)
    with pytest.raises(ValueError, match=r"'ts': value 1704153600000 at row 0.*jax_enable_x64"):
        hf_convert({"ts": [t0]}, feats)
    jax.config.update("jax_enable_x64", True)
    assert hf_convert({"ts": [t0]}, feats)["ts"].tolist() == [1704153600000]


def test_unsupported_fields_error_only_when_selected():
    ds = hf_dataset({"x": [1, 2], "dec": ["1.5", "2.5"]}, {"x": hd.Value("int32"), "dec": hd.Value("string")})
    ds = ds.cast_column("dec", hd.Value("decimal128(5, 2)"))
    fields = cv.fields_from_hf(ds.features)
    with pytest.raises(ValueError, match=r"'dec' has HF dtype 'decimal128\(5, 2\)'.*exclude_keys=\['dec'\]"):
        cv.Converter(fields)
    conv = cv.Converter(cv.select(fields, exclude_keys=["dec"]))
    out = conv(arrow_columns(ds))
    assert list(out) == ["x"] and out["x"].tolist() == [1, 2]
    nul = cv.fields_from_hf(hf_dataset({"n": [None, None], "x": [1, 2]}, {"n": hd.Value("null"), "x": hd.Value("int8")}).features)
    with pytest.raises(ValueError, match=r"'n' is all-null.*exclude_keys=\['n'\]"):
        cv.Converter(nul)


@pytest.mark.parametrize(
    "rows,features",
    [
        ({"x": [1, 2, None]}, {"x": hd.Value("int32")}),
        ({"x": ["a", "b", None]}, {"x": hd.Value("string")}),
        ({"x": [[1], [], None]}, {"x": hd.List(hd.Value("int32"))}),
        ({"x": [[1], [], [2, None]]}, {"x": hd.List(hd.Value("int32"))}),
        ({"x": [["a"], ["b", "c"], ["d", None]]}, {"x": hd.List(hd.Value("string"))}),
        ({"x": [{"y": 1}, {"y": 2}, {"y": None}]}, {"x": {"y": hd.Value("int8")}}),
    ],
)
def test_none_errors_name_the_field_and_the_global_row(rows, features):
    ds = hf_dataset(rows, features)
    cols = arrow_columns(ds)
    conv = cv.Converter(cv.fields_from_hf(ds.features), max_length=4)
    with pytest.raises(ValueError, match=r"'x(\.y)?': missing value \(None\) at row 1002\b.*exclude_keys"):
        conv({"x": pa.chunked_array([cols["x"].combine_chunks().slice(1)])}, row0=1001)
    with pytest.raises(ValueError, match=r"at row 1002\b"):
        conv({"x": plain_rows(ds, "x")[1:]}, row0=1001)


def plain_rows(ds, key):
    return [r[key] for r in ds]


_ROW = st.fixed_dictionaries({
    "i": st.integers(-(2**31), 2**31 - 1), "f": st.floats(width=32, allow_nan=False), "b": st.booleans(),
    "l": st.lists(st.integers(-100, 100), max_size=4),
    "ll": st.lists(st.lists(st.floats(width=32, allow_nan=False), min_size=4, max_size=4), max_size=3),
    "st": st.fixed_dictionaries({"u": st.integers(-(2**31), 2**31 - 1)}),
})
_FEATS = {"i": hd.Value("int64"), "f": hd.Value("float32"), "b": hd.Value("bool"), "l": hd.List(hd.Value("int32")),
          "ll": hd.List(hd.List(hd.Value("float32"), length=4)), "st": {"u": hd.Value("int64")}}


@settings(max_examples=25, deadline=None)
@given(st.lists(_ROW, min_size=1, max_size=6))
def test_padded_arrays_equal_hf_python_rows_after_removing_padding(rows):
    ds = hd.Dataset.from_list(rows, features=hd.Features(_FEATS))
    out = cv.Converter(cv.fields_from_hf(ds.features), max_length={"l": 4, "ll": 3})(arrow_columns(ds))
    for r, row in enumerate(ds):
        got = {"i": int(out["i"][r]), "f": float(out["f"][r]), "b": bool(out["b"][r]),
               "l": out["l"][r, : out["l_length"][r]].tolist(), "ll": out["ll"][r, : out["ll_length"][r]].tolist(),
               "st": {"u": int(out["st"]["u"][r])}}
        assert got == row


def test_empty_tfds_rows_take_the_declared_dtype():
    # TFDS gives an empty Sequence as a float32 array whatever the feature's dtype.
    fields = {"s": cv.Sequence(cv.Tensor((), "bool")), "i": cv.Sequence(cv.Tensor((), "int64"))}
    cols = {"s": [np.zeros(0, np.float32)] * 2, "i": [np.zeros(0, np.float32), np.array([3])]}
    out = convert(cols, fields, max_length=2)
    assert out["s"].dtype == np.bool_ and out["s"].tolist() == [[False, False]] * 2
    assert out["i"].dtype == np.int32 and out["i"].tolist() == [[0, 0], [3, 0]] and out["i_length"].tolist() == [0, 1]
    assert convert({"s": [np.zeros(0, np.float32)]}, {"s": cv.Sequence(cv.Tensor((), "bool"))})["s"].shape == (1, 0)
