"""`copilot tune`: an Optuna study of a run's hyperparameters, trials forked from its checkpoint.

Its own package beside `advisor/`, not inside it: the study is the classical optimiser the
advisor is measured against (the advisor's guess is one of its enqueued trials, on equal
terms), so it must not be part of what it judges. It builds on the advisor's trial
machinery (`advisor.trials`: the runner, the budget, the ranking's noise rule) and hands
back an `HParamProposal` like any other; the session commits it (kind `tune`). It never
imports the session, the console or the app.
"""
