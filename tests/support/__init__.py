"""Helpers shared by the test suites (real servers on real sockets, shared data)."""
