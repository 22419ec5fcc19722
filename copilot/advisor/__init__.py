"""Deciding what to change: snapshot -> LangGraph workflow -> diagnosis and one proposal.

Never imports `copilot.tui`. Generated code runs only in `sandbox`, in a child process.
"""
