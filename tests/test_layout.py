"""The lane layout: its key-derived permutations are exactly the ones every sealed file was made with."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from paramseal._layout import stable_argsort_rows


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_fast_row_sort_is_the_stable_argsort_even_with_ties(data: st.DataObject) -> None:
    rows, cols = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 40))
    small = data.draw(st.booleans())  # few distinct keys: ties in most rows
    hi = 4 if small else 2**64 - 1
    keys = data.draw(
        st.lists(st.integers(0, hi), min_size=rows * cols, max_size=rows * cols).map(
            lambda v: np.array(v, dtype=np.uint64).reshape(rows, cols)
        )
    )
    np.testing.assert_array_equal(stable_argsort_rows(keys), np.argsort(keys, axis=1, kind="stable"))


def test_random_keys_as_the_layout_draws_them() -> None:
    keys = np.random.default_rng(0).integers(0, 2**64 - 1, (50, 6600), dtype=np.uint64)
    keys[7, 100] = keys[7, 5000]  # one forced tie
    np.testing.assert_array_equal(stable_argsort_rows(keys), np.argsort(keys, axis=1, kind="stable"))
