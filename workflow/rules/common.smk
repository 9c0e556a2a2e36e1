# Everything the rules share comes from one Plan of the validated config
# (braindecode_pkg/workflow/plan.py, unit-tested without Snakemake). Building it runs the checks
# that stop a bad config before any job starts.
import os

from braindecode_pkg.workflow.plan import PRIORITY, Plan, parent

plan = Plan(config)
RESULTS = plan.results
CLI = plan.cli
