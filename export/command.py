"""`python cli.py export ...`: the flags, and the ExportConfig they make (tasks run the export).

    python cli.py export --run RUN [--quant int8|float32,int8|all] [--prune 0.5] [--calib 200]
                         [--min-agreement 0.98] [--int8-io uint8|int8] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from export.convert import CALIBRATION_IMAGES
from export.exporter import ExportConfig, parse_modes


def add_export_args(p: argparse.ArgumentParser) -> None:
    """Add the export flags to ``p`` (the `export` subparser)."""
    p.add_argument("--run", type=Path, required=True, help="a trained run folder")
    p.add_argument("--quant", default="int8",
                   help="float32 | float16 | dynamic | int8 | int8-qat, comma-separated, or all (default int8)")
    p.add_argument("--prune", type=float, default=None, help="prune conv/dense kernels to this sparsity first, e.g. 0.5")
    p.add_argument("--calib", type=int, default=CALIBRATION_IMAGES,
                   help=f"validation images for int8 calibration (default {CALIBRATION_IMAGES})")
    p.add_argument("--min-agreement", type=float, default=0.98,
                   help="fail unless each model's top-1 agrees with Keras on this fraction of test images")
    p.add_argument("--int8-io", default="uint8", choices=("uint8", "int8"),
                   help="input/output type of the int8 models (MediaPipe needs uint8)")
    p.add_argument("--qat-epochs", type=int, default=2, help="QAT fine-tuning epochs for int8-qat")
    p.add_argument("--prune-epochs", type=int, default=2, help="fine-tuning epochs while pruning")
    p.add_argument("--data-dir", type=Path, default=None, help="where tfds data is prepared (default ./data/tfds)")


def export_config(args: argparse.Namespace):
    """The ExportConfig of parsed ``args``; ConfigError for a bad setting."""
    return ExportConfig(modes=parse_modes(args.quant), prune=args.prune, calib=args.calib,
                        min_agreement=args.min_agreement, int8_io=args.int8_io,
                        qat_epochs=args.qat_epochs, prune_epochs=args.prune_epochs)
