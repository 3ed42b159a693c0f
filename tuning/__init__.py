"""Hyperparameter search for the CNN classifier (``make tune``), on Keras Tuner.

    space.py        the search space: the only place that calls hp.Int / hp.Choice / hp.Float
    hypermodel.py   build(hp) -> build_cnn(sample_cnn_config(hp)); fit also measures the int8 model
    objective.py    constraints, objective value, best-trial choice, Pareto fronts (pure functions)
    search.py       one search into RUN/tuning, then the best config retrained into RUN
    distributed.py  a chief and N workers on this host, through Keras Tuner's own env variables
    report.py       report.md, trials.csv, best_hyperparameters.json, plots, TensorBoard HParams
    command.py      the `cli.py tune` arguments
"""
