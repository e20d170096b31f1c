"""The run's lifecycle: the command line, the run folder, the live display, and the wiring of
a config into a controller (`app`), with mutators wrapped for LLM outages (`outage`)."""
