"""Training mode: blind drills, answers graded against the run's own evidence, hints and scores.

Headless (never imports textual): the trainee's screen, the trainer's view and `drillui answer`
all grade with `grade` over a `RunState` folded from the run's events.
"""
