"""Table equality across engines: same keys and columns, NULLs in the same cells, values to 1e-9."""

import numpy as np
import pandas as pd

KEYS = ["contact_id", "as_of"]


def _normal(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["as_of"] = pd.to_datetime(out["as_of"]).astype("datetime64[us]")
    return out.sort_values(KEYS, kind="stable").reset_index(drop=True)


def assert_same_table(expected: pd.DataFrame, actual: pd.DataFrame, tol: float = 1e-9) -> None:
    """Same keys, same columns in the same order, NULLs in the same cells, values within tol."""
    expected, actual = _normal(expected), _normal(actual)
    assert list(actual.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(actual[KEYS], expected[KEYS])
    for column in expected.columns.drop(KEYS):
        a, b = expected[column], actual[column]
        assert (a.isna().to_numpy() == b.isna().to_numpy()).all(), f"NULLs differ in {column}"
        if pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a):
            x = a.to_numpy(dtype="float64", na_value=np.nan)
            y = b.to_numpy(dtype="float64", na_value=np.nan)
            assert np.allclose(x, y, rtol=0, atol=tol, equal_nan=True), \
                f"{column}: max |diff| {np.nanmax(np.abs(x - y))}"
        else:
            assert (a.astype("string").fillna("<NA>") == b.astype("string").fillna("<NA>")).all(), column
