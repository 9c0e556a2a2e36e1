rule embed:
    input:
        nsd_ready,
        clip_input(),
    output:
        f"{RESULTS}/embed/clip.h5",
    params:
        root=NSD_ROOT,
        subjects=",".join(str(s) for s in config["subjects"]),
        sessions=shlex.quote(config["preprocess"]["sessions"]),
        clip=model_arg("clip"),
        sim_clip=sim_dir_opt("clip", "--sim-clip"),
        what=config["embed"]["what"],
        batch=config["embed"]["batch_size"],
        cli=CLI,
    log:
        f"{RESULTS}/logs/embed.log",
    threads: 2
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} embed --nsd-root {params.root} --subjects {params.subjects} "
        "--sessions {params.sessions} --clip {params.clip} {params.sim_clip} --what {params.what} "
        "--batch-size {params.batch} --out {output} > {log} 2>&1"
