"""The detection report's section on object sizes."""
from pipeline.evaluation.report import size_section


def _bins(small_ap50, large_ap50):
    bin_ = lambda ap50, px: {"objects": 10, "max_px": px, "ap": ap50 / 2, "ap50": ap50, "recall50": 0.9}
    return {"small": bin_(small_ap50, 16), "medium": bin_(0.9, 48), "large": bin_(large_ap50, None)}


def test_the_size_table_names_each_bin_by_its_pixels_at_the_input():
    text = "\n".join(size_section(_bins(0.85, 0.9), 192))
    assert "the object's side at the 192 px input" in text
    assert "| small (under 16 px) | 10 | 0.425 | 0.850 | 90% |" in text
    assert "| medium (16-48 px) |" in text and "| large (48 px and more) |" in text
    assert "weak spot" not in text


def test_small_objects_far_behind_the_large_ones_get_a_hint():
    text = "\n".join(size_section(_bins(0.5, 0.95), 192))
    assert "Small objects are the weak spot (AP@.5 0.50 against 0.95" in text and "IMAGE_SIZE=" in text


def test_metrics_without_sizes_add_nothing():
    assert size_section(None, 192) == []
