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


def test_progress_defaults_to_only_where_someone_watches(monkeypatch):
    """``run`` passes ``progress=None`` (bars only in a terminal or notebook) unless
    ``--no-progress`` forces them off; ``demo`` resolves the same rule to a bool."""
    from pyro_sparse_bnn.apps import cli

    seen = {}
    monkeypatch.setattr(cli, "run_entry", lambda *args, **kwargs: seen.setdefault("run", []).append(kwargs))
    monkeypatch.setattr(cli, "run_demo", lambda config: seen.setdefault("demo", []).append(config))
    path = str(ENTRIES[0])
    assert main(["run", path]) == 0 and main(["run", path, "--no-progress"]) == 0
    assert [kwargs["progress"] for kwargs in seen["run"]] == [None, False]
    assert main(["demo"]) == 0 and main(["demo", "--no-progress"]) == 0
    # pytest captures stderr: not a terminal, so no bar either way
    assert [config.progress for config in seen["demo"]] == [False, False]
