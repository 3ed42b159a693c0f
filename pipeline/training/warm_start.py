"""INIT=RUN: start a model from an earlier run's weights, wherever they fit.

Layers are matched by name (through nested models, such as a MobileNetV2 backbone built as a
sub-model) and loaded when every weight of the layer has the same shape. A detector trained on the
built-in data gives its backbone and its box heads to a detector of other classes; the class head,
whose width follows the number of classes, is left as initialised and named in the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras

from common.errors import UserError
from common.run_folder import RunFolder


@dataclass(frozen=True)
class WarmStart:
    """What INIT= loaded. loaded: layer names; not_loaded: (layer name, why) of the layers with
    weights that kept their initial values."""

    source: str
    loaded: tuple[str, ...]
    not_loaded: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict:
        return {"from": self.source, "loaded": list(self.loaded),
                "not_loaded": [{"layer": name, "why": why} for name, why in self.not_loaded]}

    def describe(self) -> str:
        return (f"INIT={self.source}: loaded {len(self.loaded)} layers; "
                f"{len(self.not_loaded)} kept their initial weights")


def layers_with_weights(model) -> dict[str, object]:
    """name -> layer, for every layer holding weights, sub-models' layers included."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(layers_with_weights(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def copy_matching_weights(source_model, model) -> tuple[list[str], list[tuple[str, str]]]:
    """Copy each layer of ``source_model`` into the layer of ``model`` with its name and weight shapes.
    Returns (loaded names, [(name, why) not loaded])."""
    given = layers_with_weights(source_model)
    loaded, skipped = [], []
    for name, layer in layers_with_weights(model).items():
        other = given.get(name)
        if other is None:
            skipped.append((name, "no layer of this name in the earlier model"))
            continue
        values = other.get_weights()
        shapes, wanted = [tuple(v.shape) for v in values], [tuple(w.shape) for w in layer.get_weights()]
        if shapes != wanted:
            skipped.append((name, f"shapes differ: {shapes} there, {wanted} here"))
            continue
        layer.set_weights(values)
        loaded.append(name)
    return loaded, skipped


def load_matching_weights(model, run_dir: Path) -> WarmStart:
    """Load RUN's model.keras into ``model`` where it fits (see the module docstring)."""
    path = RunFolder(Path(run_dir)).require_model()
    try:
        source_model = keras.models.load_model(path, compile=False)
    except Exception as e:  # a corrupt or foreign file: name it
        raise UserError(f"INIT={run_dir}: cannot load {path} ({type(e).__name__}: {e})") from None
    loaded, skipped = copy_matching_weights(source_model, model)
    if not loaded:
        raise UserError(f"INIT={run_dir}: none of its layers matches this model by name and shape; "
                        f"was it trained for the other task or another architecture?")
    return WarmStart(str(run_dir), tuple(loaded), tuple(skipped))
