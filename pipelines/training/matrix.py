"""The model's input matrix: feature columns as LightGBM reads them, the same at fit and at scoring.

Categorical attributes become pandas ``category`` columns whose categories are fixed on the
training split (:func:`prepare_matrix`); scoring writes the same values straight into one float64
array (:func:`model_array`, bit-identical predictions, tested). :mod:`.model` fits on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["MIN_EXPECTED_POSITIVES", "binning_values", "category_codes", "learnable_categories", "model_array",
           "prepare_matrix"]

MIN_EXPECTED_POSITIVES = 5.0
"""A category value is learned only when its training contacts would hold this many conversions at
the base rate (:func:`learnable_categories`)."""


def prepare_matrix(
    frame: pd.DataFrame,
    feature_columns: Sequence[str],
    categories: Mapping[str, list] | None = None,
) -> tuple[pd.DataFrame, dict[str, list]]:
    """The model matrix: the feature columns in model dtypes, categories fixed.

    Text (object, string) and ``category`` columns become ``category`` dtype with fixed
    categories; booleans and numbers become float64 (missing values stay NaN).

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows with at least ``feature_columns``; not modified.
    feature_columns : sequence of str
        The features, in model order.
    categories : mapping of str to list, optional
        Categories learned before (on the training split). When given, each listed column is
        coded against exactly these categories and values outside them become NaN; a text
        column not listed is an error. When omitted, categories are learned from ``frame``:
        its sorted distinct non-missing values.

    Returns
    -------
    matrix : pandas.DataFrame
        The features, same index as ``frame``.
    categories : dict of str to list
        The categories of every categorical feature, to store with the model.
    """
    columns = list(feature_columns)
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ValueError(f"feature columns listed twice: {duplicated}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from the frame: {missing}")
    learn = categories is None
    known = {} if categories is None else {name: list(cats) for name, cats in categories.items()}
    matrix: dict[str, pd.Series] = {}
    for name in columns:
        column = frame[name]
        if name not in known and _is_categorical(column):
            if not learn:
                raise ValueError(
                    f"feature {name!r} is text/categorical here but had no categories when the "
                    "model was trained (it was numeric then)"
                )
            known[name] = _learn_categories(column)
        matrix[name] = _as_category(column, known[name]) if name in known else _as_float(column, name)
    fixed = {name: known[name] for name in columns if name in known}
    return pd.DataFrame(matrix, index=frame.index), fixed


def learnable_categories(
    frame: pd.DataFrame,
    categories: Mapping[str, list],
    labels: np.ndarray,
    min_expected_positives: float = MIN_EXPECTED_POSITIVES,
) -> tuple[dict[str, list], dict[str, tuple[int, int]]]:
    """The training categories a model can learn from: values held by enough training contacts.

    Why: LightGBM sorts a categorical feature's values by their gradient and splits on the order,
    so a value held by a dozen contacts (a company among hundreds, a city) gets an effect fitted
    to one or two conversions. On held-out cut-offs that is noise, and the explanation then names
    the company as a top reason. A value is kept when its distinct training contacts times the
    training rows' conversion rate reach ``min_expected_positives``: fewer expected conversions
    cannot show an effect. The rest read as missing, as a value never seen in training does.

    Parameters
    ----------
    frame : pandas.DataFrame
        The training rows, with ``contact_id`` and the categorical columns.
    categories : mapping of str to list
        The categories :func:`prepare_matrix` learned on those rows.
    labels : numpy.ndarray
        The training rows' 0/1 labels (the base rate).

    Returns
    -------
    kept : dict of str to list
        Per column the categories kept, in their order.
    pooled : dict of str to (int, int)
        Per column with values dropped: how many of how many.
    """
    rate = float(np.mean(labels)) if len(labels) else 0.0
    kept: dict[str, list] = {}
    pooled: dict[str, tuple[int, int]] = {}
    for name, cats in categories.items():
        contacts = frame.groupby(frame[name].astype("object"), dropna=True)["contact_id"].nunique()
        enough = set(contacts.index[contacts.to_numpy() * rate >= min_expected_positives])
        kept[name] = [c for c in cats if c in enough]
        if len(kept[name]) < len(cats):
            pooled[name] = (len(cats) - len(kept[name]), len(cats))
    return kept, pooled


def model_array(
    frame: pd.DataFrame,
    feature_columns: Sequence[str],
    categories: Mapping[str, list],
) -> np.ndarray:
    """The model's input as one float64 array: the values LightGBM reads from :func:`prepare_matrix`.

    Scoring path: numbers as float64, a categorical feature as the code of its value among the
    training ``categories`` (missing or unseen: NaN), exactly what LightGBM makes of
    ``prepare_matrix``'s ``category`` columns. Writing the columns straight into one
    Fortran-ordered array skips building a DataFrame of categoricals and LightGBM's own
    DataFrame-to-array conversion; ``Booster.predict`` takes the array without a copy.
    The predictions are bit-identical to those on ``prepare_matrix``'s output (tested).

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows with at least ``feature_columns``; not modified.
    feature_columns : sequence of str
        The model's features, in training order.
    categories : mapping of str to list
        The categories stored with the model (from :func:`prepare_matrix` on the training split).

    Returns
    -------
    numpy.ndarray of shape (len(frame), len(feature_columns)), float64, Fortran order
    """
    columns = list(feature_columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from the frame: {missing}")
    out = np.empty((len(frame), len(columns)), dtype="float64", order="F")
    for j, name in enumerate(columns):
        column = frame[name]
        cats = categories.get(name)
        if cats is not None:
            out[:, j] = category_codes(column, cats)
        elif _is_categorical(column):
            raise ValueError(
                f"feature {name!r} is text/categorical here but had no categories when the "
                "model was trained (it was numeric then)"
            )
        else:
            out[:, j] = _as_float(column, name).to_numpy()
    return out


def binning_values(X: pd.DataFrame) -> pd.DataFrame:
    """``X`` with float features rounded to float32 precision (kept as float64) for binning.

    Why: a parallel SQL engine sums floats in no fixed order, so two builds of the same features
    differ in the last bits, and values that are equal in exact arithmetic (two contacts with
    the same history) come out a few ULPs apart. LightGBM chooses its bin edges from the
    distinct values and their counts, so those ULPs moved the edges, hence the trees: the same
    data and seed gave models 0.02 ROC-AUC apart. Rounding to 24 significant bits merges such
    twins (bins are far coarser than that) and makes a fit reproducible across rebuilds.
    """
    floats = [name for name in X.columns if pd.api.types.is_float_dtype(X[name].dtype)]
    if not floats:
        return X
    rounded = X[floats].to_numpy(dtype="float64").astype("float32").astype("float64")
    return X.assign(**{name: rounded[:, j] for j, name in enumerate(floats)})


def category_codes(column: pd.Series | np.ndarray, categories: list) -> np.ndarray:
    """Codes of ``column``'s values among ``categories`` as float64; missing or unseen: NaN."""
    # Factorise first, so the lookup among the training categories runs on the few distinct
    # values instead of every row: 5x faster on 1M rows of text (0.13 -> 0.03 s per column).
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes, distinct = column.cat.codes.to_numpy(), column.cat.categories  # match values, not codes
    else:
        codes, distinct = pd.factorize(column, use_na_sentinel=True)
    position = pd.Index(categories).get_indexer(distinct).astype("float64")  # -1: not a training category
    position[position < 0] = np.nan
    out = np.full(len(codes), np.nan)
    present = codes >= 0
    out[present] = position[codes[present]]
    return out


def _is_categorical(column: pd.Series) -> bool:
    dtype = column.dtype
    return (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype))


def _learn_categories(column: pd.Series) -> list:
    values = pd.Index(column.dropna().unique()).tolist()
    try:
        return sorted(values)
    except TypeError:  # mixed types: a stable order all the same
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def _as_category(column: pd.Series, categories: list) -> pd.Series:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.set_categories(categories)
    known = column.where(column.isin(categories))
    return pd.Series(pd.Categorical(known, categories=categories), index=column.index, name=column.name)


def _as_float(column: pd.Series, name: str) -> pd.Series:
    dtype = column.dtype
    if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
        raise TypeError(f"feature {name!r} is {dtype}: features must be numeric, boolean or text")
    return pd.Series(column.to_numpy(dtype="float64", na_value=np.nan), index=column.index, name=column.name)
