"""Trained models out of an experiment: choose a trial, write its model file, classify images.

An exported file is a plain dict saved with `torch.save`: the model's state dict plus what
inference needs (model name and options, class names, normalisation mean/std, the trial's
config and metrics). It loads with `torch.load(path, weights_only=True)`: no pickle runs.

    from study.export import load_model, classify, read_images
    model, info = load_model("model.pt")
    probs = classify(model, info, read_images(["cat.png"]))  # (N, classes)
"""

from study.export.images import classify, read_images
from study.export.model_file import load_model

__all__ = ["classify", "load_model", "read_images"]
