"""The tuning report's opening: default vs shipped, and a first line that never hides a worse model."""
from __future__ import annotations

from tuning.objective import Constraints, ObjectiveConfig, TrialRecord
from tuning.report import Comparison


def test_the_report_opens_with_who_won_and_never_hides_a_worse_model():
    default = TrialRecord("0", "COMPLETED", {}, 0.95, 500_000, 540 * 1024, 0.40, 0.45, steps=900)
    small = TrialRecord("7", "COMPLETED", {}, 0.96, 60_000, 70 * 1024, 0.10, 0.12, steps=900)
    cfg = ObjectiveConfig()
    won = Comparison(default=default, best=default, default_test=0.94, best_test=0.94)
    assert won.headline(cfg).startswith("**The default wins.**")
    assert "| test accuracy | 94.00% | 94.00% |" in won.table(cfg)
    better = Comparison(default=default, best=small, default_test=0.94, best_test=0.95)
    assert better.headline(cfg).startswith("**Trial 7 beats the default** (validation accuracy 96.00% vs 95.00%; "
                                           "test 95.00% vs 94.00%)")
    assert "| int8 size | 540.0 KB | 70.0 KB |" in better.table(cfg)
    worse = Comparison(default=default, best=small, default_test=0.96, best_test=0.95)
    assert worse.headline(cfg).startswith("**Warning: the shipped model is worse than the default on the test split** "
                                          "(95.00% vs 96.00%)")
    limited = ObjectiveConfig(constraints=Constraints(max_size_kb=100))
    assert worse.headline(limited) == ("**The default breaks the constraints** (540.0 KB > MAX_SIZE_KB=100); "
                                       "trial 7 is the best model that meets them: test accuracy 95.00% vs the "
                                       "default's 96.00%, **1.00 points worse than the default**.")
    assert better.headline(limited).endswith("test accuracy 95.00% vs the default's 94.00%.")
    assert "| meets the constraints | no | yes |" in worse.table(limited)
