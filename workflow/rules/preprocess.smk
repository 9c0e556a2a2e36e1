rule preprocess:
    input:
        nsd_ready,
    output:
        f"{RESULTS}/prep/subj{{subject}}.h5",
    wildcard_constraints:
        subject=r"\d\d",
    params:
        root=NSD_ROOT,
        opts=lambda wc: " ".join(
            f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
            for k, v in config["preprocess"].items()
        ),
        cli=CLI,
    log:
        f"{RESULTS}/logs/preprocess/subj{{subject}}.log",
    threads: job_threads("preprocess")
    resources:
        **job_resources("preprocess"),
    priority: PRIORITY["preprocess"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} preprocess --nsd-root {params.root} --subject {wildcards.subject} "
        "{params.opts} --out {output} > {log} 2>&1"
