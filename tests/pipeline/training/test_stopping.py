"""Early stopping that cannot fire on noise (pipeline.training.stopping)."""
import keras
import numpy as np
import pytest

from pipeline.training.stopping import BudgetEarlyStopping, smooth


class FakeModel:
    """What the callback touches: stop_training and the weights (one number: the epoch it was set)."""

    def __init__(self):
        self.stop_training = False
        self.weights = [np.zeros(1)]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [w.copy() for w in weights]


def run(stopper, values):
    model = FakeModel()
    stopper.set_model(model) if hasattr(stopper, "set_model") else None
    stopper._model = model
    for epoch, v in enumerate(values):
        model.weights = [np.array([epoch + 1.0])]
        stopper.on_epoch_end(epoch, {"val_accuracy": v})
        if model.stop_training:
            break
    stopper.on_train_end()
    return model


@pytest.fixture(autouse=True)
def _model_property(monkeypatch):
    monkeypatch.setattr(BudgetEarlyStopping, "model", property(lambda self: self._model), raising=False)


def test_it_cannot_stop_before_the_minimum_share_of_the_budget():
    # A lucky first epoch then a long plateau: Keras' EarlyStopping(patience=2) stops at epoch 3.
    values = [0.9] + [0.5] * 19
    stopper = BudgetEarlyStopping("val_accuracy", "max", budget_epochs=20, steps_per_epoch=10,
                                  patience_steps=20, min_share=0.5)
    run(stopper, values)
    assert stopper.patience == 2
    assert stopper.stopped_epoch == 10  # not before half of the 20 epochs


def test_patience_is_counted_in_steps():
    stopper = BudgetEarlyStopping("val_accuracy", "max", budget_epochs=100, steps_per_epoch=7, patience_steps=50)
    assert stopper.patience == 8  # ceil(50 / 7) epochs


def test_one_noisy_epoch_does_not_move_the_smoothed_best():
    assert smooth([0.5, 0.5, 0.9, 0.5]) == pytest.approx([0.5, 0.5, 0.7, 0.6])
    values = [0.80, 0.82, 0.84, 0.93, 0.86, 0.88, 0.90, 0.91, 0.92]  # epoch 4 is a fluke, the raw best
    stopper = BudgetEarlyStopping("val_accuracy", "max", budget_epochs=9, steps_per_epoch=10, patience_steps=1000)
    model = run(stopper, values)
    assert stopper.stopped_epoch == 0
    assert stopper.best_epoch == 9  # the rise at the end, not the fluke
    assert model.weights[0][0] == 9.0  # the best epoch's weights are restored


def test_it_stops_on_a_real_plateau_and_restores_the_best_weights():
    values = [0.5, 0.7, 0.9, 0.95, 0.95] + [0.6] * 20
    stopper = BudgetEarlyStopping("val_accuracy", "max", budget_epochs=10, steps_per_epoch=10, patience_steps=30)
    model = run(stopper, values)
    assert 5 <= stopper.stopped_epoch < len(values)
    assert model.weights[0][0] == stopper.best_epoch == 5  # ties go to the later epoch


def test_it_is_a_keras_callback():
    assert isinstance(BudgetEarlyStopping("val_loss", "min", budget_epochs=2, steps_per_epoch=1),
                      keras.callbacks.Callback)
    with pytest.raises(ValueError):
        BudgetEarlyStopping("val_loss", "up", budget_epochs=2, steps_per_epoch=1)
