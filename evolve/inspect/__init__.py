"""Read-only views of a run folder: status, the report (data, charts, HTML), export, and the
trust marks."""
