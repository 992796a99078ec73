"""Search-space files: the model (`spec`), parsing (`parse`), whole-file checks, CLI overrides."""

from study.space.parse import load_spec, parse_spec
from study.space.spec import Domain, StudySpec, is_sampled

__all__ = ["Domain", "StudySpec", "is_sampled", "load_spec", "parse_spec"]
