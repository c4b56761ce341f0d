"""Helper applications and fixtures the tests run (not tests themselves)."""
