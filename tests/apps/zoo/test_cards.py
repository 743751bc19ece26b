"""Model cards and the zoo table: what the stored metrics and configs give, nothing edited by hand."""


import pytest

from pyro_sparse_bnn.apps.zoo import (
    load_entry,
    render_card,
    render_table,
    run_fingerprint,
)
from pyro_sparse_bnn.apps.zoo.cards import card_command
from tests.apps.zoo.conftest import ENTRIES, MODELS


def test_every_entry_has_a_card_and_every_card_an_entry():
    entries = {p.stem for p in MODELS.glob("*.toml")}
    cards = {p.stem for p in MODELS.glob("*.md")} - {"README"}
    assert entries, "no entries found"
    assert entries - cards == set(), f"entries without a card: {sorted(entries - cards)}"
    assert cards - entries == set(), f"cards without an entry: {sorted(cards - entries)}"
    results = {p.stem for p in (MODELS / "results").glob("*.json")}
    assert results <= entries, f"stored results without an entry: {sorted(results - entries)}"


@pytest.mark.parametrize("path", ENTRIES, ids=lambda p: p.stem)
def test_card_is_the_rendering_of_its_config_and_stored_metrics(path):
    """A card is never edited by hand: it is what ``run --publish`` (or ``zoo-table --cards``)
    renders from the config and the stored metrics, so its numbers come from a run."""
    entry = load_entry(path)
    assert entry.card_path.read_text() == render_card(entry)
    metrics = entry.stored_metrics()
    if metrics is not None:
        assert not metrics["smoke"] and metrics["entry"] == entry.name
        assert card_command(metrics["command"]) in entry.card_path.read_text()
        assert "/tmp" not in entry.card_path.read_text()
        # the numbers were measured with this very config (data, network, prior, budget)
        assert metrics["run_config_sha256"] == run_fingerprint(entry)
        if "--epochs" not in metrics["command"]:
            assert metrics["schedule"]["epochs"] == entry.config["train"]["epochs"]
            assert metrics["schedule"]["batch_size"] == entry.config["train"]["batch_size"]


def test_the_cards_command_leaves_out_where_files_went():
    command = ("python -m pyro_sparse_bnn run models/wine.toml --publish --output /tmp/out --baseline-cache=/tmp/c "
               "--data-dir '/data/my fashion' --epochs 3")
    assert card_command(command) == "python -m pyro_sparse_bnn run models/wine.toml --publish --epochs 3"
    assert card_command("python -m pyro_sparse_bnn run 'my models/a.toml'") == \
        "python -m pyro_sparse_bnn run 'my models/a.toml'"


def test_readme_table_is_generated_from_the_stored_metrics():
    text = (MODELS / "README.md").read_text()
    assert render_table(MODELS) in text
