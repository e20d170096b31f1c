"""Safety around the candidates: the pre-flight parse of a child, data hashing, and scrubbing
secrets from the environment."""
