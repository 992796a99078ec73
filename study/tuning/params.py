"""Tune's param space from a spec: flat fields, a variant by name, the study's metadata."""

from __future__ import annotations

from typing import Any

from ray import tune

from study.config import TrialConfig
from study.names import META_KEY, VARIANT_KEY
from study.space import Domain, StudySpec, is_sampled


def to_tune_domain(domain: Domain) -> Any:
    kind, values = domain.kind, list(domain.values)
    if kind == "grid":
        return tune.grid_search(values)
    if kind == "choice":
        return tune.choice(values)
    if kind == "uniform":
        return tune.uniform(*values)
    if kind == "loguniform":
        return tune.loguniform(*values)
    return tune.randint(*values)  # [low, high): high is exclusive, as in Tune


class VariantValue:
    """A field that named variants set: the value of the trial's variant, else the file's (None:
    the default). Tune resolves it after the variant's grid value, so every field a trial runs
    with sits at the top level of its config (`result.config["augment"]`)."""

    def __init__(self, values: dict[str, Any], otherwise: Any) -> None:
        self.values, self.otherwise = values, otherwise

    def __call__(self, given: Any) -> Any:
        # Tune's variant generator passes the spec ({"config": ...}); its placeholder resolver the config.
        config = given["config"] if "config" in given else given
        return self.values.get(config[VARIANT_KEY], self.otherwise)


def param_space(spec: StudySpec) -> dict[str, Any]:
    """Tune's param_space: every field the file sets (a variant's at the top level, by its name
    in VARIANT_KEY), the validation split always, and the study's metadata."""
    space: dict[str, Any] = {k: to_tune_domain(v) if isinstance(v, Domain) else v for k, v in spec.space.items()}
    space["dataset"] = spec.dataset
    for key in ("val_size", "split_seed"):  # in every params.json, defaults or not: what selection read
        space.setdefault(key, getattr(TrialConfig, key))
    if spec.variants:
        space[VARIANT_KEY] = tune.grid_search(list(spec.variants))
        for key in sorted({k for overrides in spec.variants.values() for k in overrides}):
            values = {name: o[key] for name, o in spec.variants.items() if key in o}
            space[key] = tune.sample_from(VariantValue(values, spec.space.get(key)))
    # Constant across trials; lands in every trial's params.json so the analysis needs no side file.
    space[META_KEY] = {
        "experiment": spec.name,
        "baseline": spec.baseline,
        "max_t": spec.max_epochs(),
        "variants": list(spec.variants),  # the file's order, for the tables
        "metric": spec.metric,
        "mode": spec.mode,
        # Sampled fields and their domains, for the search tables and the Optuna study file.
        "searched": {k: {"kind": v.kind, "values": list(v.values)} for k, v in spec.space.items() if is_sampled(v)},
    }
    return space
