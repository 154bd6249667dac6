"""Runnable examples of lightopt; importable as class paths (``examples.digits.DigitsMLP``) from the repository root."""
