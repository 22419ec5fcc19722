"""Everything that runs inside the trainer process (spawned, one per rank).

Imports only `copilot.events`, `copilot.errors`, `copilot.config`, `copilot.walls` and
`copilot.run_folder`; never the advisor, history or the app. `launcher` is the one
module the parent imports: it starts the worker and speaks to it over a socket pair.
"""
