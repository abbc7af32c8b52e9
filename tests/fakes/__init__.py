"""Test doubles shared by the test suites (never imported by localsb or mockcloud)."""
