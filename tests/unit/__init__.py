"""Tests of rules in memory: no PostgreSQL, no sockets to it."""
