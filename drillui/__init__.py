"""drillui: guided observability failure drills on a transactional-outbox worker.

Everything outside `drillui.ui` is headless: it never imports textual, so the CLI, the tests and
the dashboard all drive the same runner.
"""

__version__ = "0.1.0"
