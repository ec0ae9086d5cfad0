"""Running sweeps on Ray Tune: search space, trial template, trainable, episode metrics, plan,
start-up, the Tune callback that records trials through the tracker, resume, interrupts, progress.
"""
