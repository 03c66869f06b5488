"""The run record: what happened in one drill run, as typed events, and the folder that keeps them.

The runner emits events (`events`), appends each one to the run's `_events.jsonl` as it happens
(`eventlog`), and writes the snapshot folder (`snapshot`). Every consumer — the live dashboard,
`watch`, `replay`, `verify`, reports and training — reads the same events. Headless: never
imports textual.
"""
