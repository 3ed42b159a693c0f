"""The held-out splits' size rule (pipeline.sources.splits)."""
from pipeline.sources.splits import (HOLDOUT, MAX_HOLDOUT, MIN_HELD_OUT, carve_splits, held_out_fraction,
                                     small_held_out)


def test_held_out_splits_get_at_least_the_minimum_where_the_data_allows():
    assert held_out_fraction(100_000) == HOLDOUT  # 10 % is plenty
    assert round(held_out_fraction(1797) * 1797) == MIN_HELD_OUT  # raised from 180 to 200
    assert held_out_fraction(600) == MAX_HOLDOUT  # 200 would be a third: capped at 15 %


def test_carving_follows_the_rule_and_keeps_the_classes_balanced():
    items = list(range(1800))
    labels = [i % 10 for i in items]
    splits = carve_splits(items, {}, seed=0, strata=labels)
    assert len(splits["validation"]) == len(splits["test"]) == MIN_HELD_OUT
    assert len(splits["train"]) == 1400
    assert sorted(labels[i] for i in splits["test"]) == sorted(list(range(10)) * 20)
    assert not set(splits["train"]) & set(splits["test"])


def test_small_held_out_allows_for_per_class_rounding():
    assert not small_held_out(199) and not small_held_out(MIN_HELD_OUT)
    assert small_held_out(60)
