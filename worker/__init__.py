"""The transactional-outbox relay: Postgres outbox -> search engine / chronicle table.

Runs on its own (`python -m worker`) and never imports drillui or textual.
"""
