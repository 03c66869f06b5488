"""`drillui report`: one self-contained HTML page for a training session.

Per run: its end state and why, a chart of the main signals over time with the fault window and
the moments checks ticked, the checklist with observed values, queries and times, the trainer's
steps, the fault's proof, notes, the screenshots taken and training scores. Everything is read
from the runs' own records with the same fold every other view uses (`RunState`), and the page
fetches nothing and runs no script. Headless: never imports textual.

    select   which runs (names, --since)          model   one pass over a run's events -> RunReport
    load     a run folder's files -> RunReport     chart   the signals as inline SVG
    page     RunReport -> HTML                     build   the command: select, write, print the path
"""
