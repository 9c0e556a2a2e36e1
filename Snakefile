# braindecode_pkg workflow: wiring only. Every rule calls one `braindecode-pkg` subcommand;
# the logic lives in the braindecode_pkg package.
from snakemake.utils import min_version, validate

min_version("9.27")


configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, f"{workflow.basedir}/config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/brain.smk"
include: "workflow/rules/decode.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        plan.all_targets(),
    default_target: True
