"""Evaluation: designers compared on held-out prompts through a Judge (issue 6).

``compare.evaluate`` runs every method on the same held-out prompts and seeds and writes
the report (``report.md``, ``report.json``, ``designs.jsonl``, plots); ``designers`` holds
the methods behind one Protocol, ``metrics`` and ``summary`` the numbers, docs/evaluation.md
the definitions.
"""
