"""Dumb widgets of the dashboard: data in through reactives or `update` calls, messages out."""
