"""What a study writes into Tune's `config` and onto disk: key names and readers. No Ray here.

The trainable, the Tuner set-up and the analysis all read these, so the analysis can load an
experiment folder without importing Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from study.config import TrialConfig

META_KEY = "study"  # config entry with the experiment's own metadata; not a TrialConfig field
VARIANT_KEY = "variant"  # config entry {"name": ..., **overrides} for named variants
CHECKPOINT_FILE = "trainer.pt"  # inside each checkpoint_* folder: Trainer.state_dict()
SPEC_FILE = "study.yaml"  # the checked spec (file + CLI overrides), saved in the experiment folder


def trial_config(config: Mapping[str, Any], source: str = "trial config") -> TrialConfig:
    """Tune's config -> TrialConfig: drop the metadata, fold a named variant's overrides in."""
    raw = {k: v for k, v in config.items() if k not in (META_KEY, VARIANT_KEY)}
    variant = dict(config.get(VARIANT_KEY) or {})
    variant.pop("name", None)
    return TrialConfig.from_dict({**raw, **variant}, source)
