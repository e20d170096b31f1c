"""The pure core of evolve: candidates, the store, selection, islands.

Nothing here imports Ray, torch or an LLM client, so every decision is testable in milliseconds.
"""
