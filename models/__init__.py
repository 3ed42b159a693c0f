"""Model definitions: where tensors become a model."""
