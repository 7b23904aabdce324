"""Credentials: where they come from, whether they are safe and current (store), and
redaction of every secret the host knows."""
