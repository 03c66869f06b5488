"""Metrics, spans and logs exactly as shared/CONTRACT.md names them."""
