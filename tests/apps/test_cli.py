"""The command line: list, show and zoo-table."""

import shutil

from pyro_sparse_bnn.apps.cli import main
from pyro_sparse_bnn.apps.zoo import (
    render_table,
)
from tests.apps.zoo.conftest import ENTRIES, MODELS


def test_cli_list_show_and_table(tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("*.md"))
    (models / "README.md").write_text("# zoo\n")
    assert main(["list", "--models", str(models)]) == 0
    listed = capsys.readouterr().out
    assert all(p.stem in listed for p in ENTRIES)
    name = ENTRIES[0].stem
    assert main(["show", name, "--models", str(models)]) == 0
    assert "[prior]" in capsys.readouterr().out
    assert main(["zoo-table", "--models", str(models), "--cards"]) == 0
    assert {p.stem for p in models.glob("*.md")} - {"README"} == {p.stem for p in ENTRIES}
    assert render_table(models) in (models / "README.md").read_text()
