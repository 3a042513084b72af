"""Tests of webapp/store: the shared state on SQLite and PostgreSQL."""
