"""Scoring and showing a model's predictions: classification metrics, COCO mAP, reports, plots
and the tables `make predict` prints."""
