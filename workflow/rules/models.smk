# nsd-sim's own pretrained models, trained here when models.sim_weights is "train" (otherwise the
# weights shipped in braindecode_pkg/weights/nsd-sim-1.0 are used and these rules never run).
# Each rule runs the part of the shipped models' training chain (braindecode-pkg
# train-sim-models) that its model needs; the chain's intermediate stages go to
# {SIM_MODELS}/stages and are reused by a rerun.


rule train_sim_clip:
    output:
        f"{SIM_MODELS}/clip/{SIM_MODEL_FILE['clip']}",
    params:
        out=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),
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
        "{params.cli} train-sim-models --only clip --scale {params.preset} --threads {threads} "
        "--out {params.out} --quiet > {log} 2>&1"


rule train_sim_image_decoder:
    input:
        trained_sim_input("clip"),
    output:
        f"{SIM_MODELS}/image_decoder/{SIM_MODEL_FILE['image_decoder']}",
    params:
        out=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),
        preset=MODELS["sim_preset"],
        clip=sim_chain_clip_opt(),
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_sim_image_decoder.log",
    threads: job_threads("train_sim_image_decoder")
    resources:
        **job_resources("train_sim_image_decoder"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-sim-models --only image_decoder --scale {params.preset} --threads {threads} "
        "{params.clip} --out {params.out} --quiet > {log} 2>&1"


rule train_sim_captioner:
    input:
        trained_sim_input("clip"),
    output:
        f"{SIM_MODELS}/captioner/{SIM_MODEL_FILE['captioner']}",
    params:
        out=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),
        preset=MODELS["sim_preset"],
        clip=sim_chain_clip_opt(),
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_sim_captioner.log",
    threads: job_threads("train_sim_captioner")
    resources:
        **job_resources("train_sim_captioner"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-sim-models --only captioner --scale {params.preset} --threads {threads} "
        "{params.clip} --out {params.out} --quiet > {log} 2>&1"
