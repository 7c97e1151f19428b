"""Audio: one float32 scale for every backend, ragged time padded per the ragged rule."""

from __future__ import annotations

import io
import wave

import datasets as hd
import numpy as np
import pytest
from convert_helpers import arrow_columns, convert

from datarax_fn import _convert as cv


def pcm_wav(samples: np.ndarray, sr: int = 8000, width: int = 2) -> bytes:
    """Returns a WAV file holding the integer PCM ``samples`` (T,) or (T, C) exactly."""
    x = samples.reshape(len(samples), -1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(width)
        w.setframerate(sr)
        if width == 3:
            v = x.astype("<i4").reshape(-1, 1).view(np.uint8)[:, :3]
            w.writeframes(v.tobytes())
        else:
            w.writeframes(x.astype({1: np.uint8, 2: "<i2", 4: "<i4"}[width]).tobytes())
    return buf.getvalue()


def audio_dataset(clips: list[bytes]) -> hd.Dataset:
    """Returns a real HF Dataset with an undecoded Audio column holding ``clips``."""
    ds = hd.Dataset.from_dict({"au": [{"bytes": c, "path": None} for c in clips]})
    return ds.cast_column("au", hd.Audio(decode=False))


CLIP = np.array([0, 16384, -32768, 32767], np.int16)
SCALED = [0.0, 0.5, -1.0, 32767 / 32768]


def test_hf_wav_and_tfds_int16_samples_give_the_same_floats():
    ds = audio_dataset([pcm_wav(CLIP)])
    hf = cv.Converter(cv.fields_from_hf(ds.features))(arrow_columns(ds))["au"]
    tfds = convert({"au": [CLIP]}, {"au": cv.Audio(8000, "int16")})["au"]
    assert hf.dtype == tfds.dtype == np.float32
    assert hf.tolist() == tfds.tolist() == [SCALED]


@pytest.mark.parametrize("width,values,scaled", [
    (1, np.array([0, 128, 255], np.uint8), [-1.0, 0.0, 127 / 128]),
    (3, np.array([-(2**23), 0, 2**23 - 1]), [-1.0, 0.0, (2**23 - 1) / 2**23]),
    (4, np.array([-(2**31), 0, 2**30]), [-1.0, 0.0, 0.5]),
])
def test_integer_pcm_is_divided_by_two_to_the_bits_minus_one(width, values, scaled):
    out = convert({"au": [pcm_wav(values, width=width)]}, {"au": cv.Audio()})["au"]
    assert out.dtype == np.float32 and out[0].tolist() == np.float32(scaled).tolist()


def test_ragged_clips_pad_with_lengths_and_the_rate_is_in_meta():
    ds = audio_dataset([pcm_wav(CLIP), pcm_wav(CLIP[:2])])
    fields = cv.fields_from_hf(ds.features)
    with pytest.raises(ValueError, match=r"'au': rows have different lengths.*max_length=\{'au': L\}"):
        cv.Converter(fields)(arrow_columns(ds))
    conv = cv.Converter(fields, max_length=6)
    out = conv(arrow_columns(ds))
    assert out["au"].tolist() == [SCALED + [0, 0], SCALED[:2] + [0] * 4] and out["au_length"].tolist() == [4, 2]
    assert conv.meta == {"au": {"sampling_rate": 8000}}
    spec = cv.Converter(fields, max_length=6, static=True).element_spec
    assert spec["au"].shape == (6,) and spec["au_length"].shape == ()


def test_declared_rate_is_checked_and_meta_is_known_at_construction():
    conv = cv.Converter({"au": cv.Audio(16000)})
    assert conv.meta == {"au": {"sampling_rate": 16000}}
    with pytest.raises(ValueError, match=r"'au': row 3 has sampling rate 8000.*16000.*resample"):
        conv({"au": [pcm_wav(CLIP)]}, row0=3)


def test_stereo_clips_keep_channels_last():
    stereo = np.stack([CLIP, -CLIP.astype(np.int32)], axis=1).clip(-32768, 32767)
    out = convert({"au": [pcm_wav(stereo)]}, {"au": cv.Audio()})["au"]
    assert out.shape == (1, 4, 2) and out[0, :, 0].tolist() == SCALED


def test_decoded_hf_arrays_pass_through():
    out = convert({"au": [{"array": np.array([0.25, -0.5], np.float64), "sampling_rate": 8000}]}, {"au": cv.Audio(8000)})
    assert out["au"].dtype == np.float32 and out["au"].tolist() == [[0.25, -0.5]]


def test_flac_decodes_through_soundfile_exactly():
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, CLIP, 8000, format="FLAC", subtype="PCM_16")
    out = convert({"au": [buf.getvalue()]}, {"au": cv.Audio(8000)})["au"]
    assert out.tolist() == [SCALED]


def test_streaming_refuses_clips_with_undeclared_channels():
    stereo = np.stack([CLIP, CLIP], axis=1)
    conv = cv.Converter({"au": cv.Audio(8000)}, static=True, max_length=8)
    assert conv.element_spec["au"].shape == (8,)
    assert conv({"au": [pcm_wav(CLIP)]})["au"].shape == (1, 8)
    with pytest.raises(ValueError, match=r"'au': clips at rows 20.. have 2 channels, the feature declares 1"):
        conv({"au": [pcm_wav(stereo)]}, row0=20)
    conv = cv.Converter({"au": cv.Audio(8000, None, 2)}, static=True, max_length=8)
    assert conv.element_spec["au"].shape == (8, 2) and conv({"au": [pcm_wav(stereo)]})["au"].shape == (1, 8, 2)
