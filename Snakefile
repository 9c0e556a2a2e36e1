# braindecode_pkg workflow: wiring only. Every rule calls one `braindecode-pkg` subcommand;
# the logic lives in the braindecode_pkg package.
from snakemake.utils import min_version, validate

min_version("9.27")


configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, f"{workflow.basedir}/config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/preprocess.smk"


rule all:
    input:
        expand(f"{RESULTS}/prep/subj{{subject}}.h5", subject=SUBJECTS),
    default_target: True
