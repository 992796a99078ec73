"""Driver-side checks that need more than the YAML: datasets, pretrained weights and the
packages of the study's loggers exist.

They run before Ray starts, so a missing CIFAR or offline ImageNet weights cost one line and
exit code 2, not a study of failed trials. CIFAR is downloaded here, once, under its file lock.
A dataset this machine has already cached from its current source is not loaded again (nor
torch imported for it): the trials read that cache.
"""

from __future__ import annotations

from study.data import is_cached
from study.space import StudySpec
from study.trackers import check_installed


def prepare_inputs(spec: StudySpec) -> None:
    check_installed(spec.trackers())
    configs = spec.trial_configs()
    for key in sorted({(c.dataset, c.data_dir, c.num_train, c.num_test) for c in configs}):
        if not is_cached(*key):
            from study.data.datasets import load_dataset

            load_dataset(*key)
    if any(c.model == "resnet18" and c.pretrained for c in configs):
        from study.models.resnet import pretrained_state_dict

        pretrained_state_dict()
