"""The LLM side of the advisor: `LLMRoles` (`roles.py`) turns snapshots into prompts, and
`providers/` carries them to Bedrock or an OpenAI-compatible server. It is the only part
of the advisor that talks to a network or holds credentials, so it is kept apart from
the offline rule engine: nothing here imports `copilot.advisor.offline`, and
`copilot.advisor.factory` joins the two (falling back to the rules when a provider is
unavailable). It runs nothing an LLM writes: the workflow sends code to the sandbox.
"""
