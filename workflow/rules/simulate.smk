rule simulate:
    output:
        manifest=f"{RESULTS}/sim/sim_truth/manifest.json",
    params:
        preset=config["sim"]["preset"],
        seed=config["sim"]["seed"],
        sets=sim_overrides(),
        out=lambda wc, output: os.path.dirname(os.path.dirname(output.manifest)),
        cli=CLI,
    log:
        f"{RESULTS}/logs/simulate.log",
    threads: job_threads("simulate")
    resources:
        **job_resources("simulate"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} simulate --preset {params.preset} --seed {params.seed} {params.sets} "
        "--out {params.out} > {log} 2>&1"
