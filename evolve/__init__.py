"""evolve: evolutionary population search over ML training scripts."""
