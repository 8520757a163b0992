"""Tests that start a throwaway PostgreSQL (and usually pgshroud in front of it)."""
