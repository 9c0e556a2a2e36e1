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
        expand(f"{RESULTS}/prep/subj{{subject}}.h5", subject=SUBJECTS),
        f"{RESULTS}/embed/clip.h5",
        [f"{RESULTS}/brain/{m}/subj{s}.h5" for m, s in brain_methods()],
        f"{EVAL}/metrics.tsv",
        f"{RESULTS}/report/index.html",
    default_target: True
