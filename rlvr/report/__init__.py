"""What ``rlvr-report`` (rlvr/cli/report.py) is built from, a module per concern.

runs.py    finding run dirs and loading their metrics and configs; the swept keys that label them
seeds.py   a sweep with several seeds per setting: grouping by setting, numbers over seeds (pure functions)
tables.py  the markdown tables: runs, per run, per setting over seeds
plots.py   the figures
"""
