"""study: a report's CIFAR models and ablations as a Ray Tune hyperparameter study."""

__version__ = "0.1.0"
