"""Helpers shared by the test suites (factories of valid events, a registry double for unit tests)."""
