"""copilot: a terminal co-pilot for training neural networks.

The package folders mirror the architecture: `training` runs inside the trainer
process, `advisor` decides what to change, `history` keeps the experiment in git,
`tui` shows it all. `events` is the only contract between processes.
"""

__version__ = "0.1.0"
