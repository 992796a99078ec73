"""What a study writes into Tune's `config` and onto disk: key names and readers. No Ray here.

The trainable, the Tuner set-up and the analysis all read these, so the analysis can load an
experiment folder without importing Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from study.config import TrialConfig

META_KEY = "study"  # config entry with the experiment's own metadata; not a TrialConfig field
VARIANT_KEY = "variant"  # config entry: the name of the trial's variant (its fields are top-level)
CHECKPOINT_FILE = "trainer.pt"  # inside each checkpoint_* folder: Trainer.state_dict()
SPEC_FILE = "study.yaml"  # the checked spec (file + CLI overrides), saved in the experiment folder


def trial_config(config: Mapping[str, Any], source: str = "trial config") -> TrialConfig:
    """Tune's config -> TrialConfig: drop the metadata and the variant's name; None is a default.

    Older experiments nested a variant's fields under VARIANT_KEY ({"name": ..., **fields}).
    """
    variant = config.get(VARIANT_KEY)
    nested = dict(variant) if isinstance(variant, Mapping) else {}
    nested.pop("name", None)
    raw = {k: v for k, v in config.items() if k not in (META_KEY, VARIANT_KEY) and v is not None}
    return TrialConfig.from_dict({**raw, **nested}, source)


def variant_name(config: Mapping[str, Any]) -> str | None:
    """The trial's variant, by the name the file gives it; None for a file without variants."""
    variant = config.get(VARIANT_KEY)
    if isinstance(variant, Mapping):
        variant = variant.get("name")
    return None if variant is None else str(variant)
