"""Helpers for tests that run real processes: free ports, a private Redis, subprocess servers."""
