"""The report's `old_nn`: a sigmoid multilayer perceptron on flattened pixels."""

from __future__ import annotations

import torch
from torch import nn


class OldMLP(nn.Module):
    """3072 -> hidden -> hidden -> classes, sigmoid activations, as in the report."""

    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * 32 * 32, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)  # last FC for classification

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, 3, 32, 32) -> (B, 3072)
        x = torch.sigmoid(self.fc1(x))
        x = torch.sigmoid(self.fc2(x))
        return self.fc3(x)  # (B, classes) logits
