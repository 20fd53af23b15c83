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


def test_claims_name_the_running_cell_in_a_notebook(monkeypatch):
    import IPython

    class Shell:
        user_ns = {"In": ["", "first cell", "second cell", "the running cell"]}

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    claims = report.Claims()
    claims.add("a claim", "1.0")
    assert claims.rows[0].cell == 3 and "| a claim | 1.0 | In [3] |" in claims.markdown()
