"""The packaged evaluation tables and the model cards agree: tables name rows, cards hold the numbers."""

from __future__ import annotations

import pytest

from zoo.engine.evaluate import list_tables, load_table
from zoo.engine.recipes import available
from zoo.models import ENTRY_POINTS, get_model_info, split_name

TABLES = list_tables()


def test_every_packaged_table_is_found():
    assert set(TABLES) == {"cvact", "cvusa", "da_campus", "domainnet", "office_home", "roxford_rparis", "salad"}


@pytest.mark.parametrize("name", TABLES)
def test_table_rows_and_cards_agree(name):
    for row in load_table(name).rows:
        arch, tag = split_name(row.model)
        info = get_model_info(arch)
        tag = tag or info.default_variant
        card = info.variant(tag)
        # The row's model variant names this table, and the card holds the row's benchmark ...
        assert card.table == name, f"{row.label}: {row.model}'s card names table {card.table!r}, not {name!r}"
        on_card = {r.metric for r in card.published if r.benchmark == row.benchmark}
        assert on_card, f"{row.label}: the card of {row.model} has no numbers for benchmark {row.benchmark!r}"
        # ... with no metric the row does not report.
        assert on_card <= set(row.metrics), f"{row.label}: card metrics {sorted(on_card - set(row.metrics))} not in the row"
        assert row.published == {r.metric: r.value for r in card.published if r.benchmark == row.benchmark}
        assert row.source


def test_every_card_names_a_packaged_recipe_and_table():
    recipes = set(available())
    for arch in ENTRY_POINTS:
        info = get_model_info(arch)
        for tag, card in info.variants.items():
            assert card.recipe is None or card.recipe in recipes, f"{arch}.{tag}: recipe {card.recipe!r} is not packaged"
            assert card.table is None or card.table in TABLES, f"{arch}.{tag}: table {card.table!r} is not packaged"
            for result in card.published:
                assert result.source, f"{arch}.{tag}: {result.benchmark} {result.metric} has no source"


def test_a_card_without_the_rows_benchmark_is_a_disagreement(tmp_path):
    table = tmp_path / "t.yaml"
    table.write_text("name: t\ntitle: t\nrows:\n  - label: x\n    model: dinov2_salad.8192_256\n"
                     "    dataset: msls_val\n    benchmark: pitts30k_test\n    data_subdir: msls\n"
                     "    protocol: vpr_recall\n    metrics: [R@1]\n")
    row = load_table(str(table)).rows[0]
    assert row.published is None  # what test_table_rows_and_cards_agree refuses for a packaged table
