"""The wire side of the guard: one guarded HTTP exchange per LLM API (endpoints, streams, degrade)."""
