"""Deciding what to change: snapshot -> LangGraph workflow -> diagnosis and one proposal.

Never imports `copilot.tui`. Generated code runs only in `sandbox`, in a child process.
`offline/` is the rule engine and its code generators, `llm/` the LLM roles and their
providers, `sandbox/` runs proposed code; `roles.py` is the protocol both advisors
implement, `factory.py` builds the roles the settings ask for (the one place the offline
and LLM sides meet), `graph.py` and `workflow.py` run the workflow.
"""
