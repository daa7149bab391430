"""The book shows the package's source (show_source) on pages that hold 100 columns: no line is wider."""

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segformer_edu"
WIDTH = 100


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py")))
def test_every_package_line_fits_the_page(module):
    lines = (PACKAGE / module).read_text().splitlines()
    wide = [f"{module}:{n}: {len(line)} columns" for n, line in enumerate(lines, 1) if len(line) > WIDTH]
    assert not wide, "\n".join(wide[:10])
