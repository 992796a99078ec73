"""Ray Tune from a checked spec: the Tuner (`tuner`), its param space, scheduler and search, what it
prints (`output`), and the trainable each trial runs (`entry` -> `trainable`, over `study.train`).
"""
