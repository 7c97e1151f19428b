"""Field types, selection by dotted paths, and the HF / TFDS mappers."""

from __future__ import annotations

import datasets as hd
import numpy as np
import pytest

from datarax_fn import _convert as cv

SQUAD = {
    "id": cv.Text(),
    "answers": cv.Struct({"text": cv.Sequence(cv.Text()), "answer_start": cv.Sequence(cv.Tensor((), "int32"))}),
    "objects": cv.Sequence(cv.Struct({"bbox": cv.Sequence(cv.Tensor((), "float32"), 4), "label": cv.Label(("a", "b"))})),
}


def test_fields_are_hashable_and_compare_by_value():
    a = cv.Struct({"x": cv.Image(), "y": cv.Sequence(cv.Text())})
    b = cv.Struct({"x": cv.Image(), "y": cv.Sequence(cv.Text())})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != cv.Struct({"y": cv.Sequence(cv.Text()), "x": cv.Image()})


def test_select_dotted_paths_prune_structs_and_lists_of_structs():
    assert cv.select(SQUAD, include_keys=["answers.text", "objects.bbox"]) == {
        "answers": cv.Struct({"text": cv.Sequence(cv.Text())}),
        "objects": cv.Sequence(cv.Struct({"bbox": cv.Sequence(cv.Tensor((), "float32"), 4)})),
    }
    assert cv.select(SQUAD, exclude_keys=["answers.text", "objects"]) == {
        "id": cv.Text(), "answers": cv.Struct({"answer_start": cv.Sequence(cv.Tensor((), "int32"))}),
    }
    assert cv.select(SQUAD) == SQUAD


def test_select_errors_list_the_available_paths():
    with pytest.raises(ValueError, match=r"unknown keys \['answers.txt'\].*'answers.text'"):
        cv.select(SQUAD, exclude_keys=["answers.txt"])
    with pytest.raises(ValueError, match="exclusive"):
        cv.select(SQUAD, ["id"], ["id"])
    with pytest.raises(TypeError, match=r"write \['id'\]"):
        cv.select(SQUAD, include_keys="id")
    with pytest.raises(ValueError, match="leaves no keys"):
        cv.select({"a": cv.Text()}, exclude_keys=["a"])
    with pytest.raises(ValueError, match="include_keys is empty"):
        cv.select(SQUAD, include_keys=[])


def test_check_key_options_returns_tuples():
    assert cv.check_key_options(["a", "b.c"], None, "Cfg") == (("a", "b.c"), None)
    assert cv.check_key_options(None, None) == (None, None)
    with pytest.raises(TypeError, match="Cfg: exclude_keys"):
        cv.check_key_options(None, "a", "Cfg")


def test_read_paths_are_the_selected_leaves_in_order():
    assert cv.read_paths(SQUAD) == ["id", "answers.text", "answers.answer_start", "objects.bbox", "objects.label"]
    assert cv.read_paths(cv.select(SQUAD, exclude_keys=["answers"])) == ["id", "objects.bbox", "objects.label"]


def test_hf_mapper_is_faithful_to_the_declaration():
    feats = hd.Features({
        "img": hd.Image(), "grey": hd.Image(mode="L"), "deep": hd.Image(mode="I;16"),
        "au": hd.Audio(sampling_rate=16000), "lab": hd.ClassLabel(names=["x", "y"]),
        "s": hd.Value("string"), "b": hd.Value("binary"), "i": hd.Value("int64"),
        "boxes": hd.List(hd.List(hd.Value("float32"), length=4)), "a2": hd.Array2D((2, 3), "uint8"),
        "ts": hd.Value("timestamp[ms]"), "d": hd.Value("date32"), "dur": hd.Value("duration[us]"),
        "t": hd.Value("time64[ns]"), "dec": hd.Value("decimal128(5, 2)"), "nul": hd.Value("null"),
        "js": hd.Json(), "tvl": hd.TranslationVariableLanguages(languages=["en", "fr"]),
        "tr": hd.Translation(languages=["de", "en"]), "st": {"u": hd.Value("int8")},
        "lst": hd.List({"p": hd.Value("float64")}),
    })
    f = cv.fields_from_hf(feats)
    assert f["img"] == cv.Image() and f["grey"] == cv.Image((None, None, 1), "uint8", "L")
    assert f["deep"] == cv.Image((None, None, 1), "uint16", "I;16")
    assert f["au"] == cv.Audio(16000) and f["lab"] == cv.Label(("x", "y"))
    assert (f["s"], f["b"], f["i"]) == (cv.Text(), cv.Text(binary=True), cv.Tensor((), "int64"))
    assert f["boxes"] == cv.Sequence(cv.Sequence(cv.Tensor((), "float32"), 4))
    assert f["a2"] == cv.Tensor((2, 3), "uint8")
    assert (f["ts"], f["d"], f["dur"], f["t"]) == (
        cv.Time("timestamp", "ms"), cv.Time("date", "D"), cv.Time("duration", "us"), cv.Time("time", "ns"))
    assert all(isinstance(f[k], cv.Unsupported) for k in ("dec", "nul", "js", "tvl"))
    assert "'dec'" in f["dec"].reason and "decimal128(5, 2)" in f["dec"].reason
    assert f["tr"] == cv.Struct({"de": cv.Text(), "en": cv.Text()})
    assert f["st"] == cv.Struct({"u": cv.Tensor((), "int8")})
    assert f["lst"] == cv.Sequence(cv.Struct({"p": cv.Tensor((), "float64")}))


def test_tfds_mapper_is_faithful_to_the_declaration():
    import tensorflow_datasets as tfds

    F = tfds.features
    feats = F.FeaturesDict({
        "img": F.Image(shape=(None, None, 3)), "deep": F.Image(shape=(8, 8, 1), dtype=np.uint16),
        "flt": F.Image(shape=(4, 4, 1), dtype=np.float32), "jpg": F.Image(encoding_format="jpeg"),
        "au": F.Audio(sample_rate=16000, dtype=np.int16), "lab": F.ClassLabel(names=["x", "y"]),
        "txt": F.Text(), "s": F.Tensor(shape=(), dtype=np.str_), "strs": F.Tensor(shape=(None,), dtype=np.str_),
        "rag": F.Tensor(shape=(None, None), dtype=np.float32), "bbox": F.BBoxFeature(),
        "objs": F.Sequence({"bbox": F.BBoxFeature(), "label": F.ClassLabel(names=["a"])}),
        "seq": F.Sequence(F.Scalar(np.int64), length=3),
    })
    f = cv.fields_from_tfds(feats)
    assert f["img"] == cv.Image((None, None, 3), "uint8", None, None)
    assert f["deep"] == cv.Image((8, 8, 1), "uint16", None, None)
    assert f["flt"] == cv.Image((4, 4, 1), "float32", None, None)
    assert f["jpg"] == cv.Image((None, None, 3), "uint8", None, "jpeg")
    assert f["au"] == cv.Audio(16000, "int16", None) and f["lab"] == cv.Label(("x", "y"))
    assert f["txt"] == cv.Text() and f["s"] == cv.Text() and f["strs"] == cv.Sequence(cv.Text())
    assert f["rag"] == cv.Tensor((None, None), "float32") and f["bbox"] == cv.Tensor((4,), "float32")
    assert f["objs"] == cv.Struct({"bbox": cv.Sequence(cv.Tensor((4,), "float32")), "label": cv.Sequence(cv.Label(("a",)))})
    assert f["seq"] == cv.Sequence(cv.Tensor((), "int64"), 3)
