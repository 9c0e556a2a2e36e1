rule embed:
    input:
        plan.nsd_ready,
        plan.clip_input(),
    output:
        plan.embed,
    params:
        root=plan.nsd_root,
        subjects=plan.subjects_arg,
        sessions=plan.sessions_arg,
        clip=plan.model_arg("clip"),
        sim_clip=plan.sim_dir_opt("clip"),
        what=config["embed"]["what"],
        dtype=config["embed"].get("dtype", "float32"),
        batch=config["embed"]["batch_size"],
        device=plan.device_opt("embed"),
        cli=CLI,
    log:
        f"{RESULTS}/logs/embed.log",
    threads: plan.threads("embed")
    resources:
        **plan.resources("embed"),
    priority: PRIORITY["embed"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} embed --nsd-root {params.root} --subjects {params.subjects} "
        "--sessions {params.sessions} --clip {params.clip} {params.sim_clip} --what {params.what} "
        "--dtype {params.dtype} "
        "--batch-size {params.batch} {params.device} --out {output} > {log} 2>&1"


rule latents:
    # the low-level head's targets (only when brain.heads names "latent")
    input:
        plan.nsd_ready,
        plan.trained_sim_input("image_decoder"),
    output:
        plan.latent,
    params:
        root=plan.nsd_root,
        subjects=plan.subjects_arg,
        sessions=plan.sessions_arg,
        image_decoder=plan.model_arg("image_decoder"),
        sim=plan.sim_dir_opt("image_decoder"),
        device=plan.device_opt("latents"),
        cli=CLI,
    log:
        f"{RESULTS}/logs/latents.log",
    threads: plan.threads("latents")
    resources:
        **plan.resources("latents"),
    priority: PRIORITY["latents"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} latents --nsd-root {params.root} --subjects {params.subjects} --sessions {params.sessions} "
        "--image-decoder {params.image_decoder} {params.sim} {params.device} --out {output} > {log} 2>&1"
