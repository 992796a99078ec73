"""The names a study writes: keys in Tune's config and files in an experiment folder."""

META_KEY = "study"  # config entry with the experiment's own metadata; not a TrialConfig field
VARIANT_KEY = "variant"  # config entry: the name of the trial's variant (its fields are top-level)
SPEC_FILE = "study.yaml"  # the checked spec (file + CLI overrides), saved in the experiment folder
CHECKPOINT_FILE = "trainer.pt"  # inside each checkpoint_* folder: Trainer.state_dict()
META_FILE = "meta.json"  # beside it: {"epoch", "config_key", "history"} (study.checkpoints.files)
CHECKPOINT_SIGNATURE = "signature.json"  # beside it: the trial's signature (study.trust.signing)
