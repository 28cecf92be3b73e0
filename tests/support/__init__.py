"""Helpers the test suites share (test token issuer, event builders)."""
