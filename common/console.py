"""What a person sees in the terminal: TensorFlow's start-up noise hidden unless VERBOSE=1.

TensorFlow and absl print lines at import ("oneDNN custom operations are on", "Could not find
cuda drivers", "All log messages before absl::InitializeLog()...") before any log level is
read, and on machines without a GPU an ``E0000 ... failed call to cuInit`` that reads like a
failure. ``quiet_tensorflow()`` raises the C++ log level and imports TensorFlow with the
process's stderr (file descriptor 2) sent to a buffer; if the import fails, what it printed is
shown. ``VERBOSE=1`` (make) / ``VERBOSE`` in the environment shows everything.
"""
from __future__ import annotations

import os
import sys
import tempfile

VERBOSE_ENV = "VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "no", "false")


def quiet_tensorflow() -> None:
    """Import TensorFlow now, silently (see the module docstring); a no-op when VERBOSE is set."""
    if verbose() or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # errors too: "failed call to cuInit" on a machine with no GPU
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401  (the import is the point)
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
