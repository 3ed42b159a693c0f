from pathlib import Path

from common.run_folder import RunFolder


def test_an_evaluation_on_the_runs_own_data_is_named_by_model_and_split():
    run = RunFolder(Path("runs/a"))
    assert run.evaluation(Path("runs/a/export/model_int8.tflite"), "test") == Path("runs/a/eval/model_int8-test.json")


def test_an_evaluation_on_other_data_names_the_data_and_never_shares_a_file():
    run = RunFolder(Path("runs/a"))
    model = Path("runs/a/model.keras")
    held_out = run.evaluation(model, "train", "voc:/data/photos-600-seed1")
    assert held_out.parent == Path("runs/a/eval")
    assert held_out.name.startswith("model-voc-photos-600-seed1-") and held_out.name.endswith("-train.json")
    names = {run.evaluation(model, "train", data).name for data in
             ("voc:/data/photos-600-seed1", "voc:/elsewhere/photos-600-seed1", "coco:/data/photos-600-seed1",
              "tfds:mnist", "shapes")}
    assert len(names) == 5  # same folder name in another place, another kind: another file
    assert run.evaluation(model, "train") not in {run.evaluations / name for name in names}
    assert run.evaluation(model, "test", "tfds:mnist").name.startswith("model-tfds-mnist-")
