"""tacticalctl: the operator CLI."""
