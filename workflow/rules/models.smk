# nsd-sim's own pretrained models, trained here when models.sim_weights is "train" (otherwise the
# weights shipped in braindecode_pkg/weights/nsd-sim-1.0 are used and these rules never run).


rule train_sim_clip:
    output:
        f"{SIM_MODELS}/clip/{SIM_MODEL_FILE['clip']}",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        preset=MODELS["sim_preset"],
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_sim_clip.log",
    threads: job_threads("train_sim_clip")
    resources:
        **job_resources("train_sim_clip"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-clip --preset {params.preset} --threads {threads} --workers {threads} "
        "--out {params.out} > {log} 2>&1"


rule train_sim_image_decoder:
    input:
        trained_sim_input("clip"),
    output:
        f"{SIM_MODELS}/image_decoder/{SIM_MODEL_FILE['image_decoder']}",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        preset=MODELS["sim_preset"],
        clip=model_arg("clip"),
        sim_clip=sim_dir_opt("clip", "--sim-clip"),
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_sim_image_decoder.log",
    threads: job_threads("train_sim_image_decoder")
    resources:
        **job_resources("train_sim_image_decoder"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-image-decoder --preset {params.preset} --threads {threads} "
        "--clip {params.clip} {params.sim_clip} --out {params.out} > {log} 2>&1"


rule train_sim_captioner:
    input:
        trained_sim_input("clip"),
    output:
        f"{SIM_MODELS}/captioner/{SIM_MODEL_FILE['captioner']}",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        preset=MODELS["sim_preset"],
        clip=model_arg("clip"),
        sim_clip=sim_dir_opt("clip", "--sim-clip"),
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_sim_captioner.log",
    threads: job_threads("train_sim_captioner")
    resources:
        **job_resources("train_sim_captioner"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-captioner --preset {params.preset} --threads {threads} --workers {threads} "
        "--clip {params.clip} {params.sim_clip} --out {params.out} > {log} 2>&1"
