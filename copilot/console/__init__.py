"""The plain-terminal front end: the headless co-pilot driver (`headless.py`) and the
training progress printing (`progress.py`) it shares with `copilot train`. It prints and
reads on a console with rich and holds no training, advisor or git logic
(`copilot.session` does the work). It is a package of its own, outside
`copilot.session`, so that the session never imports the command-line layer: the
commands use the console, the console drives a session. Nothing here imports Textual.
"""
