rule preprocess:
    input:
        plan.nsd_ready,
    output:
        f"{RESULTS}/prep/subj{{subject}}.h5",
    wildcard_constraints:
        subject=r"\d\d",
    params:
        root=plan.nsd_root,
        opts=plan.stage_opts("preprocess"),
        cli=CLI,
    log:
        f"{RESULTS}/logs/preprocess/subj{{subject}}.log",
    threads: plan.threads("preprocess")
    resources:
        **plan.resources("preprocess"),
    priority: PRIORITY["preprocess"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} preprocess --nsd-root {params.root} --subject {wildcards.subject} "
        "{params.opts} --out {output} > {log} 2>&1"
