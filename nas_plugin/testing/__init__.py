"""Reusable test suites: subclass them to check a new strategy against the shared contract."""
