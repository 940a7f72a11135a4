"""Every shipped supervised recipe (scripts/*.toml) parses into Options and points at the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SHARED_DATA
from lightft.options import Options, read_config_file

RECIPES = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipe_parses(recipe):
    data = read_config_file(recipe)
    opts = Options.from_dict(data, str(recipe))
    assert opts.train and opts.val
    if SHARED_DATA.is_dir():
        assert Path(opts.train).is_file() and Path(opts.val).is_file()


def test_each_recipe_has_a_script():
    scripts = {p.name for p in RECIPES[0].parent.glob("*.sh")}
    assert {"sst2.sh", "conll2003.sh"} <= scripts
