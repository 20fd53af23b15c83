"""bncourse.checks: the shared argument checks."""

import pytest

from bncourse.checks import positive_int


@pytest.mark.parametrize("value", [1, 2, 10**9])
def test_positive_int_returns_the_value(value):
    assert positive_int("n", value) == value


@pytest.mark.parametrize("value", [0, -3, 1.0, 2.5, "3", None, True, False])
def test_positive_int_rejects_with_the_name_and_the_value(value):
    with pytest.raises(ValueError, match=rf"^batch_size must be a positive int, got {value!r}$".replace("(", r"\(")):
        positive_int("batch_size", value)
