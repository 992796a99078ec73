"""What survives a crash, and what is believed after one: signatures, state backup, lock, recovery.

- Signed (`signing`, one HMAC key per user): the experiment folder's own files (Ray's state,
  `study.yaml`) by the driver, after every Tune save (`state_backup.StateBackup`) and at the
  end; each checkpoint by its trial as it writes it, bound to trial and epoch; each trial's
  `params.json` and `result.json` by the driver.
- Saved: a signed copy of Tune's state (`state_backup`), so a state file cut short by a crash
  is read from the copy (`experiment_state`); only a resume puts the copy back.
- Checked: by a resume before Ray opens a file, and by export (`resume_checks`); a trial checks
  the checkpoint it loads. A resumed trial continues from its newest checkpoint on disk
  (`recovery`, `replay`), and ASHA's rungs are rebuilt from the results it had (`asha`).
- Held: one driver per experiment folder (`lock`), released on exit and on SIGHUP or SIGTERM.

docs/trust.md says what a user can rely on, and the limits.
"""
