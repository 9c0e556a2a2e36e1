# Values every rule shares, derived from the validated config.
import json
import os
import shlex
import sys

RESULTS = config["results"]
SUBJECTS = [f"{s:02d}" for s in config["subjects"]]
SIMULATED = config["nsd_root"] is None
NSD_ROOT = f"{RESULTS}/sim/nsd" if SIMULATED else config["nsd_root"]
SIM_MANIFEST = f"{RESULTS}/sim/sim_truth/manifest.json"
# the Python that runs snakemake runs the stages too (same environment, no PATH assumptions)
CLI = shlex.quote(sys.executable) + " -m braindecode_pkg"


def nsd_ready(wildcards):
    """The simulated dataset when nsd-sim is used; nothing to wait for with real NSD."""
    return [SIM_MANIFEST] if SIMULATED else []


def sim_overrides():
    """`--set KEY=VALUE` options for `braindecode-pkg simulate`: the configured subjects and
    config["sim"]["overrides"]."""
    items = {"subjects": config["subjects"], **config["sim"].get("overrides", {})}.items()
    return " ".join(f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in items)
