"""The report's CNN, with the knobs its ablations turn: width, batch norm, FC width, dropout."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int, kernel: int, stride: int, batch_norm: bool) -> list[nn.Module]:
    # No bias before BatchNorm: BN's shift makes it redundant.
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride=stride, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    return layers


class ReportCNN(nn.Module):
    """conv(3->C, k5 s2) -> conv(C->C, k3) -> conv(C->C, k3) -> conv(C->2C, k3) -> maxpool 2 -> FC.

    Spatial sizes for a 32x32 input, no padding: 32 -> 14 -> 12 -> 10 -> 8 -> pool 4, so the
    flattened features are 2C * 4 * 4. ReLU follows every conv (after the pool for the last
    one, as in the report) and the hidden FC.
    """

    def __init__(
        self,
        num_classes: int,
        channels: int,
        batch_norm: bool,
        fc_width: int,
        dropout: float,
    ) -> None:
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            *conv_block(3, c, 5, 2, batch_norm),
            nn.ReLU(inplace=True),  # (B, C, 14, 14)
            *conv_block(c, c, 3, 1, batch_norm),
            nn.ReLU(inplace=True),  # (B, C, 12, 12)
            *conv_block(c, c, 3, 1, batch_norm),
            nn.ReLU(inplace=True),  # (B, C, 10, 10)
            *conv_block(c, 2 * c, 3, 1, batch_norm),  # (B, 2C, 8, 8)
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),  # (B, 2C, 4, 4)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 2C*16)
            nn.Linear(2 * c * 4 * 4, fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),  # "hint: dropout goes here!"; p=0 is the identity
            nn.Linear(fc_width, num_classes),  # last FC for classification
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, classes) logits
