"""Everything that runs inside the trainer process (spawned, one per rank).

Imports only `copilot.events`, `copilot.errors`, `copilot.config` and
`copilot.run_folder`; never the advisor, history or the app. `launcher` is the one
module the parent imports: it spawns the worker and speaks to it through queues.
"""
