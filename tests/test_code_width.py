"""The book shows the package's source (show_source) on pages that hold 100 columns: no line is wider."""

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segformer_edu"
WIDTH = 100
# modules whose authors have not reflowed them yet: strict, so the mark must go once they fit
NOT_YET = {"plots.py"}


@pytest.mark.parametrize("module", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="not reflowed yet"))
    if name in NOT_YET else name for name in sorted(p.name for p in PACKAGE.glob("*.py"))])
def test_every_package_line_fits_the_page(module):
    lines = (PACKAGE / module).read_text().splitlines()
    wide = [f"{module}:{n}: {len(line)} columns" for n, line in enumerate(lines, 1) if len(line) > WIDTH]
    assert not wide, "\n".join(wide[:10])
