"""Trials: a proposal measured before anyone decides on it.

Each candidate change, and the unchanged run beside them, trains a short budget of steps
forked from the run's checkpoint (same weights, same data order, same seed) in its own
trainer process; the parent scores every arm's outputs on the same fixed validation
samples and ranks the candidates against the unchanged run's own noise.

- `budget.py`   how long a trial is, and how long it is expected to take
- `runner.py`   the trial processes: start, collect, cancel, extend
- `scoring.py`  the parent's scoring of the outputs (the only module here that imports torch, lazily)
- `ranking.py`  noise, the paired comparison, the winner

The package decides nothing about git, the gate or the trainer the session runs: the
session forks, holds and continues the run; the graph turns a ranking into a proposal.
"""
