"""bncourse.report: the claims table."""

import pytest

from bncourse import report


def test_claims_table_lists_each_claim_with_its_value_and_cell():
    claims = report.Claims()
    claims.add("BN trains faster | here", "0.03 vs 0.10", cell=7)
    claims.add("multi\nline", "1")
    assert len(claims) == 2 and claims.rows[0].cell == 7 and claims.rows[1].cell is None  # not in a notebook
    table = claims.markdown()
    assert table.splitlines()[0] == "| claim | computed | asserted in |"
    assert "| BN trains faster \\| here | 0.03 vs 0.10 | In [7] |" in table
    assert "| multi line | 1 | (outside a notebook) |" in table
    assert claims._repr_markdown_() == table


def test_claims_reject_bad_rows():
    claims = report.Claims()
    with pytest.raises(TypeError, match="claim"):
        claims.add(3, "1")
    with pytest.raises(ValueError, match="computed"):
        claims.add("a claim", " ")
    with pytest.raises(TypeError, match="cell"):
        claims.add("a claim", "1", cell="4")
    for bad in (0, -5):
        with pytest.raises(ValueError, match=r"cell must be an execution count >= 1 .*got " + str(bad)):
            claims.add("a claim", "1", cell=bad)
    assert len(claims) == 0


def test_claims_name_the_running_cell_in_a_notebook(monkeypatch):
    import IPython

    class Shell:
        user_ns = {"In": ["", "first cell", "second cell", "the running cell"]}

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    claims = report.Claims()
    claims.add("a claim", "1.0")
    assert claims.rows[0].cell == 3 and "| a claim | 1.0 | In [3] |" in claims.markdown()


# --- compare: the one rule for run-vs-run comparisons ------------------------------------------------

def test_compare_claims_a_lead_only_when_every_seed_agrees_and_the_mean_beats_the_spread():
    cmp = report.compare([0.90, 0.91, 0.92], [0.85, 0.86, 0.86], labels=("BN", "plain"), metric="accuracy")
    assert cmp.ahead == "BN" and cmp.wins == 3 and cmp.seeds == 3
    assert cmp.diffs == pytest.approx((0.05, 0.05, 0.06)) and cmp.mean == pytest.approx(0.0533333)
    assert str(cmp).startswith("BN ahead in 3/3 seeds; BN's advantage in accuracy: mean +0.0533")
    # every seed the same sign, but the mean is inside its own seed spread: no claim
    noisy = report.compare([0.801, 0.80, 0.86], [0.80, 0.79, 0.80], labels=("BN", "plain"))
    assert noisy.wins == 3 and noisy.mean < noisy.spread and noisy.ahead is None
    assert str(noisy).startswith("no clear difference (BN better in 3/3 seeds)")
    # the notebook 06 case: +0.008, -0.005, +0.001 is no clear difference
    assert report.compare([0.008, -0.005, 0.001], [0, 0, 0]).ahead is None


def test_compare_names_b_when_b_is_ahead_and_respects_lower_is_better():
    cmp = report.compare([0.10, 0.12, 0.11], [0.20, 0.21, 0.23], labels=("BN", "plain"), metric="loss",
                         higher_is_better=False)
    assert cmp.ahead == "BN" and cmp.mean > 0      # a lower loss is better
    assert report.compare([0.1, 0.1], [0.2, 0.21], labels=("x", "y")).ahead == "y"
    assert "y ahead in 2/2 seeds" in str(report.compare([0.1, 0.1], [0.2, 0.21], labels=("x", "y")))


def test_compare_min_effect_and_one_seed():
    assert report.compare([0.80, 0.81], [0.79, 0.80], min_effect=0.02).ahead is None
    assert report.compare([0.80, 0.82], [0.79, 0.80], min_effect=0.01).ahead == "A"
    one = report.compare([0.85], [0.43], labels=("GN", "BN"), min_effect=0.25)
    assert one.ahead == "GN" and str(one).startswith("in this run (one seed): GN ahead")
    assert report.compare([0.85], [0.80], min_effect=0.25).ahead is None
    with pytest.raises(ValueError, match="min_effect"):
        report.compare([0.85], [0.43])


@pytest.mark.parametrize("a, b, error, match", [
    ([0.1, 0.2], [0.1], ValueError, "paired by seed"),
    ([], [], ValueError, "empty"),
    ([0.1, float("nan")], [0.1, 0.2], ValueError, r"a\[1\] is nan"),
    ([0.1, float("inf")], [0.1, 0.2], ValueError, "diverged"),
    ([0.1, "0.2"], [0.1, 0.2], TypeError, r"a\[1\]"),
    ([True, 0.2], [0.1, 0.2], TypeError, r"a\[0\]"),
    ("0.1", [0.1], TypeError, "sequence"),
])
def test_compare_rejects_bad_scores(a, b, error, match):
    with pytest.raises(error, match=match):
        report.compare(a, b)


def test_compare_takes_arrays_and_tensors():
    import numpy as np
    import torch
    cmp = report.compare(np.array([0.9, 0.91, 0.92]), torch.tensor([0.8, 0.8, 0.81]), labels=("BN", "plain"))
    assert cmp.ahead == "BN" and cmp.seeds == 3


def test_claims_keep_an_escaped_pipe_a_single_escaped_pipe():
    claims = report.Claims()
    claims.add(r"norm $\|W\|$ or a|b", "1", cell=1)
    assert r"| norm $\|W\|$ or a\|b | 1 | In [1] |" in claims.markdown()


def test_compare_rejects_bad_options_and_leaves_inputs_alone():
    a, b = [0.9, 0.8], [0.7, 0.6]
    with pytest.raises(ValueError, match="labels"):
        report.compare(a, b, labels=("same", "same"))
    with pytest.raises(ValueError, match="labels"):
        report.compare(a, b, labels=(" ", "plain"))
    with pytest.raises(TypeError, match="labels"):
        report.compare(a, b, labels=["x", "y"])
    with pytest.raises(TypeError, match="min_effect"):
        report.compare(a, b, min_effect="0.1")
    with pytest.raises(ValueError, match="overflow"):
        report.compare([1.7e308] * 3, [-1.7e308] * 3)
    with pytest.raises(ValueError, match="min_effect"):
        report.compare(a, b, min_effect=-1)
    with pytest.raises(TypeError, match="higher_is_better"):
        report.compare(a, b, higher_is_better="no")
    report.compare(a, b)
    assert a == [0.9, 0.8] and b == [0.7, 0.6]
