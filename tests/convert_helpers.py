"""Shared helpers for the conversion tests: real HF datasets -> columns as the loaders give them."""

from __future__ import annotations

import datasets as hd

from datarax_fn import _convert as cv


def hf_dataset(rows: dict, features: dict) -> hd.Dataset:
    return hd.Dataset.from_dict(rows, features=hd.Features(features))


def arrow_columns(ds: hd.Dataset) -> dict:
    """Returns the Arrow columns of a Dataset, as ``with_format("arrow")`` gives them."""
    t = ds.with_format("arrow")[:]
    return {k: t.column(k) for k in t.column_names}


def hf_convert(rows: dict, features: dict, **options) -> dict:
    """Returns a real HF Dataset of ``rows`` converted by a Converter over its declared features."""
    ds = hf_dataset(rows, features)
    return cv.Converter(cv.fields_from_hf(ds.features), **options)(arrow_columns(ds))


def convert(columns: dict, fields: dict, **options) -> dict:
    return cv.Converter(fields, **options)(columns)
