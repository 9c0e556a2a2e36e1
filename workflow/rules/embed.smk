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
        dtype=config["embed"].get("dtype", "float32"),
        batch=config["embed"]["batch_size"],
        cli=CLI,
    log:
        f"{RESULTS}/logs/embed.log",
    threads: job_threads("embed")
    resources:
        **job_resources("embed"),
    priority: PRIORITY["embed"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} embed --nsd-root {params.root} --subjects {params.subjects} "
        "--sessions {params.sessions} --clip {params.clip} {params.sim_clip} --what {params.what} "
        "--dtype {params.dtype} "
        "--batch-size {params.batch} --out {output} > {log} 2>&1"


rule latents:
    # the low-level head's targets (only when brain.heads names "latent")
    input:
        nsd_ready,
        trained_sim_input("image_decoder"),
    output:
        LATENT,
    params:
        root=NSD_ROOT,
        subjects=",".join(str(s) for s in config["subjects"]),
        sessions=shlex.quote(config["preprocess"]["sessions"]),
        image_decoder=model_arg("image_decoder"),
        sim=sim_dir_opt("image_decoder", "--sim-image-decoder"),
        cli=CLI,
    log:
        f"{RESULTS}/logs/latents.log",
    threads: job_threads("latents")
    resources:
        **job_resources("latents"),
    priority: PRIORITY["latents"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} latents --nsd-root {params.root} --subjects {params.subjects} --sessions {params.sessions} "
        "--image-decoder {params.image_decoder} {params.sim} --out {output} > {log} 2>&1"
