"""Operator actions and queries behind `tacticalctl`: the CLI parses and renders, these modules decide."""
