"""Data: prompt sets, the collection journal (SQLite) and dataset export."""
