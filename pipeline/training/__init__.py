"""Where a model is trained into a run folder: one run lifecycle (``lifecycle.py``) for every
task, the classifier's and the detector's recipes, and where the steps run (tf.distribute)."""
