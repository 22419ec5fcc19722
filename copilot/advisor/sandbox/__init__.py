"""Running proposed model code before anyone trains with it: the parent side (`parent.py`),
the child process (`child.py`), the template process it is forked from (`template_process.py`,
with its client `template.py`) and the static lint (`static_lint.py`). It is apart from
both advisors because it checks code from either (and from the human's editor) the same
way, and because `child.py` is started as a script by its file path and imports nothing
of the copilot package. This package file stays empty, so that importing
`copilot.advisor.sandbox.child` (the parent does, for `SandboxJob`) loads nothing else:
import the modules themselves, e.g. `copilot.advisor.sandbox.parent`.
"""
