"""One co-pilot run: the trainer, the advisor and the git history kept in step.

`controller.py` holds `Session` (used by the app and the headless driver),
`triggers.py` decides when the advisor looks, `headless.py` drives a session from a
plain terminal. Nothing here imports Textual. Import the modules themselves: this
package file stays empty so that importing `copilot.session.triggers` stays cheap.
"""
