"""Where data becomes tensors: sources, preprocessing, datasets, training and evaluation."""
