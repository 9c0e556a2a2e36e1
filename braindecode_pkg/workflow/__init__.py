"""The Snakemake workflow's planning, importable and unit-tested without Snakemake.

:mod:`.plan` turns the validated config into everything the rules need (targets, inputs,
command-line options, priorities, the checks run before any job starts); :mod:`.resources` turns
the config's ``resources`` section into each rule's threads, memory, runtime, GPUs and launcher.
``workflow/rules/*.smk`` keep only rules and read a :class:`.plan.Plan`.

May import any stage (it plans all of them); nothing imports it but the CLI and the Snakefile.
"""
