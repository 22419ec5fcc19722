"""One module per group of CLI subcommands; each exposes `register(subparsers)`.

Registering must stay cheap: heavy imports (torch, Textual, LangGraph) go inside handlers.
"""
