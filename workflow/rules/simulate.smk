rule simulate:
    output:
        manifest=plan.sim_manifest,
    params:
        preset=config["sim"]["preset"],
        seed=config["sim"]["seed"],
        sets=plan.sim_overrides(),
        out=lambda wc, output: parent(output.manifest, 2),
        cli=CLI,
    log:
        f"{RESULTS}/logs/simulate.log",
    threads: plan.threads("simulate")
    resources:
        **plan.resources("simulate"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} simulate --preset {params.preset} --seed {params.seed} {params.sets} "
        "--out {params.out} > {log} 2>&1"
