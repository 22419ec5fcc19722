"""One co-pilot run: the trainer, the advisor and the git history kept in step.

`controller.py` holds `Session` (used by the app and by the headless driver,
`copilot.console.headless`), `triggers.py` decides when the advisor looks. Nothing here
imports Textual or the command line (`copilot.commands`, `copilot.console`). Import the
modules themselves: this package file stays empty so that importing
`copilot.session.triggers` stays cheap.
"""
