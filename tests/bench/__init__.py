"""Benchmark harness of factorflow (``make bench``); not a test suite: pytest collects nothing here."""
