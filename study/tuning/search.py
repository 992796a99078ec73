"""Tune's scheduler and search from a spec: FIFO or ASHA, grid/random or Optuna's TPE, grown on resume."""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from study.space import StudySpec
from study.trust.asha import ResumableASHA


def make_scheduler(spec: StudySpec) -> FIFOScheduler | ResumableASHA:
    if spec.scheduler.type == "fifo":
        return FIFOScheduler()
    s = spec.scheduler
    # time_attr "epoch" (our own counter) survives restore; the trainable reports it every epoch.
    return ResumableASHA(
        time_attr="epoch",
        max_t=spec.max_epochs(),
        grace_period=min(s.grace_period, spec.max_epochs()),
        reduction_factor=s.reduction_factor,
    )


def make_search(spec: StudySpec) -> Any:
    if spec.search.type != "optuna":
        if spec.search.seed is None:
            return None  # Tune's default BasicVariantGenerator: grid points x random samples
        # The same seed draws the same random samples, so two runs (e.g. ASHA vs FIFO) compare alike.
        return BasicVariantGenerator(random_state=spec.search.seed)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed, n_startup_trials=spec.search.startup_trials())
    search = AshaAwareOptunaSearch(sampler=sampler, max_t=spec.max_epochs())
    return ConcurrencyLimiter(search, max_concurrent=spec.search.max_concurrent)


class AshaAwareOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, except that a trial ASHA stopped before max_t reaches Optuna as PRUNED.

    Ray tells Optuna such a trial is COMPLETE with its last (early, low) value, so TPE learns
    from it as if it had finished. PRUNED, with the per-epoch values Ray already reported, is
    what it is; TPE ranks pruned trials by their last intermediate value. A diverged trial is FAIL.
    """

    def __init__(self, *args: Any, max_t: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_t = max_t

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        stopped = result and not error and int(result.get("epoch", self.max_t)) < self.max_t
        if trial_id in self._completed_trials or not stopped:
            return super().on_trial_complete(trial_id, result, error)
        state = optuna.trial.TrialState.FAIL if result.get("diverged") else optuna.trial.TrialState.PRUNED
        self._ot_study.tell(self._ot_trials[trial_id], state=state)
        self._completed_trials.add(trial_id)


class GrowingSearchGenerator(SearchGenerator):
    """Tune's wrapper of a Searcher, restored with its total raised to `num_samples` when that is
    more than the saved total: the searcher (Optuna, with every trial it has) then suggests more."""

    def __init__(self, searcher: Any, num_samples: int) -> None:
        super().__init__(searcher)
        self.num_samples = num_samples

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._total_samples = max(self._total_samples, self.num_samples)  # SearchGenerator's own count


def grow_search(tuner: tune.Tuner, num_samples: int) -> None:
    """Let a restored optuna search run to `num_samples` trials in all (study.yaml's, which
    `study resume --num-samples` raises). Ray restores the searcher's total from its saved state;
    the generator above raises it as it is restored."""
    # Tuner.restore takes no TuneConfig, so the restored one is changed in place (Ray's private
    # TunerInternal): tune.run uses a SearchAlgorithm it is given as it is, a Searcher it wraps.
    config = tuner._local_tuner._tune_config
    if not isinstance(config.search_alg, SearchGenerator):
        config.search_alg = GrowingSearchGenerator(config.search_alg, num_samples)
