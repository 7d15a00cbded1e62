"""The drill-down on plain data: what explains a deviation of the total, and how it is said."""

from __future__ import annotations

import math

import pytest

from monitor.drilldown import Cell, Contribution, cells_from_segments, explain, fold

COUNTRIES = {"US": 400.0, "DE": 250.0, "GB": 150.0, "FR": 100.0, "BR": 60.0, "JP": 40.0}
PLATFORMS = {"ios": 0.5, "android": 0.3, "web": 0.2}


def segments(
    change: dict[str, float] | None = None, *, both: bool = False, noise: float = 0.0
) -> dict[str, tuple[float, float, float]]:
    """(actual, expected, spread) per segment; ``change`` multiplies a country's (or with
    ``both``, a ``country|platform``'s) actual value."""
    change = change or {}
    out = {}
    for country, size in COUNTRIES.items():
        for platform, part in (PLATFORMS.items() if both else [("", 1.0)]):
            name = f"{country}|{platform}" if both else country
            expected = size * part
            factor = change.get(name, change.get(country, 1.0))
            out[name] = (expected * factor, expected, max(math.sqrt(expected), noise))
    return out


def test_one_country_that_collapsed_explains_the_drop_in_words_a_person_reads() -> None:
    found = explain(cells_from_segments(segments({"DE": 0.4}), ["country"]))
    assert found.kind == "one"
    assert [c.cell.label(named=False) for c in found.culprits] == ["DE"]
    assert found.culprits[0].share == pytest.approx(1.0)
    assert found.text("revenue") == "DE -60% explains 100% of the drop in revenue"
    assert found.ranked[0] == found.culprits[0]


def test_two_countries_that_fell_are_both_named_the_larger_impact_first() -> None:
    found = explain(cells_from_segments(segments({"GB": 0.5, "FR": 0.2}), ["country"]))
    assert found.kind == "few"
    assert [c.cell.label(named=False) for c in found.culprits] == ["FR", "GB"]
    assert found.text("revenue").endswith("explain 100% of the drop in revenue")


def test_a_broad_move_names_no_culprit_even_the_largest_segment() -> None:
    found = explain(cells_from_segments(segments({c: 0.7 for c in COUNTRIES}), ["country"]))
    assert found.kind == "broad" and found.culprits == ()
    assert found.text("revenue").startswith("broad-based: revenue moved -30%")
    # the contributions are still listed, the largest first, adding up to all of it
    assert found.ranked[0].cell.label(named=False) == "US"
    assert sum(c.share for c in found.ranked) == pytest.approx(1.0)


def test_a_dominant_segment_that_fell_alone_is_not_called_broad() -> None:
    big = {"US": 800.0, "DE": 100.0, "GB": 100.0}
    cells = {k: (v * (0.5 if k == "US" else 1.0), v, math.sqrt(v)) for k, v in big.items()}
    found = explain(cells_from_segments(cells, ["country"]))
    assert found.kind == "one" and found.culprits[0].cell.label(named=False) == "US"


def test_a_mix_shift_is_said_when_the_total_holds_while_shares_move() -> None:
    found = explain(cells_from_segments(segments({"DE": 1.4, "US": 0.75}), ["country"]))
    assert found.kind == "mix"
    assert {c.cell.label(named=False) for c in found.culprits} == {"DE", "US"}
    assert found.text("revenue").startswith("mix shift: revenue held (+0%) while shares moved:")


def test_noise_within_each_segments_spread_is_no_incident() -> None:
    noisy = {k: (a * (1.01 if i % 2 else 0.99), e, s) for i, (k, (a, e, s)) in enumerate(segments().items())}
    assert explain(cells_from_segments(noisy, ["country"])).kind == "none"


def test_a_small_segment_collapsing_explains_the_small_move_of_a_total_that_holds() -> None:
    found = explain(cells_from_segments(segments({"JP": 0.0}), ["country"]), total_spread=60.0)
    assert found.kind == "one" and found.culprits[0].cell.label(named=False) == "JP"
    assert found.text("revenue") == "JP -100% moved beyond its noise; revenue itself held (-4%)"


def test_a_pair_is_named_when_it_is_sharper_than_its_country() -> None:
    found = explain(cells_from_segments(segments({"DE|ios": 0.0}, both=True), ["country", "platform"]))
    assert found.kind == "one"
    assert found.culprits[0].cell.where == (("country", "DE"), ("platform", "ios"))
    assert found.text("orders") == "country=DE, platform=ios -100% explains 100% of the drop in orders"


def test_a_whole_country_is_named_rather_than_each_of_its_platforms() -> None:
    found = explain(cells_from_segments(segments({"DE": 0.2}, both=True), ["country", "platform"]))
    assert found.kind == "one" and found.culprits[0].cell.where == (("country", "DE"),)


def test_cells_add_segments_up_per_dimension_and_pair_and_keep_the_rest_apart() -> None:
    data = {"DE|ios": (10.0, 20.0, 3.0), "DE|web": (5.0, 5.0, 4.0), "US|ios": (7.0, 7.0, 0.0),
            "__other__": (3.0, 2.0, 1.0)}
    sets = cells_from_segments(data, ["country", "platform"])
    assert set(sets) == {("country",), ("platform",), ("country", "platform")}
    by_country = {c.where: c for c in sets[("country",)]}
    de = by_country[(("country", "DE"),)]
    assert (de.actual, de.expected, de.spread) == (15.0, 25.0, 5.0)
    assert by_country[(("country", "__other__"),)].actual == 3.0
    assert len(sets[("country", "platform")]) == 4


def test_high_cardinality_keeps_the_largest_moves_and_folds_the_rest() -> None:
    cells = [Cell((("sku", f"s{i}"),), 100.0 - i, 100.0, 1.0) for i in range(500)]
    kept = fold(cells, 10)
    assert len(kept) == 10 and kept[-1].where == (("sku", "__other__"),)
    assert kept[0].where == (("sku", "s499"),)
    assert sum(c.delta for c in kept) == pytest.approx(sum(c.delta for c in cells))


def test_the_explanation_travels_as_json_with_its_ranked_contributions() -> None:
    found = explain(cells_from_segments(segments({"DE": 0.4}), ["country"]))
    data = found.to_json("revenue")
    assert data["kind"] == "one" and data["text"].startswith("DE -60% explains")
    assert data["contributions"][0]["where"] == {"country": "DE"}
    assert Contribution.from_json(data["contributions"][0]) == found.ranked[0]


def test_a_segment_value_holding_the_separator_is_kept_whole_and_counted_as_rest() -> None:
    data = {"a|b|c": (1.0, 5.0, 1.0), "x|y": (5.0, 5.0, 1.0)}
    sets = cells_from_segments(data, ["country", "platform"])
    assert {c.where for c in sets[("country",)]} == {(("country", "__other__"),), (("country", "x"),)}
