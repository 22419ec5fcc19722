"""LLM providers behind one small interface (`base.LLMProvider`)."""
