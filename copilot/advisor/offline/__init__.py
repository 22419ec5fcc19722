"""The offline advisor: the rule engine (`rules.py`), the code generators (`codegen/`) and
`OfflineAdvisor` (`advisor.py`), which puts them behind the advisor roles. Everything
here is deterministic and needs no network, no credentials and no tokens: it is the
default advisor and the fallback whenever an LLM provider cannot be reached. It is a
package of its own so that it stays usable without the LLM side: nothing here imports
`copilot.advisor.llm`, and the two meet only in `copilot.advisor.factory`. It writes
code but never runs it (`copilot.advisor.sandbox` does).
"""
