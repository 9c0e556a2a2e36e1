# nsd-sim's own pretrained models (and the judge CLIP evaluate scores with), trained here when
# models.sim_weights is "train" (otherwise the weights shipped in
# braindecode_pkg/sim/weights/nsd-sim-1.0 are used and these rules never run).
# Each rule runs the part of the shipped models' training chain (braindecode-pkg
# train-sim-models) that its model needs; the chain's intermediate stages go to
# {plan.sim_models}/stages and are reused by a rerun.


rule train_sim_clip:
    output:
        plan.sim_model_file("clip"),
    params:
        out=lambda wc, output: parent(output[0], 2),
        preset=plan.models["sim_preset"],
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_sim_clip.log",
    threads: plan.threads("train_sim_clip")
    resources:
        **plan.resources("train_sim_clip"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-sim-models --only clip --scale {params.preset} --threads {threads} "
        "--out {params.out} --quiet > {log} 2>&1"


rule train_sim_image_decoder:
    input:
        plan.trained_sim_input("clip"),
    output:
        plan.sim_model_file("image_decoder"),
    params:
        out=lambda wc, output: parent(output[0], 2),
        preset=plan.models["sim_preset"],
        clip=plan.sim_chain_clip_opt(),
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_sim_image_decoder.log",
    threads: plan.threads("train_sim_image_decoder")
    resources:
        **plan.resources("train_sim_image_decoder"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-sim-models --only image_decoder --scale {params.preset} --threads {threads} "
        "{params.clip} --out {params.out} --quiet > {log} 2>&1"


rule train_sim_captioner:
    input:
        plan.trained_sim_input("clip"),
    output:
        plan.sim_model_file("captioner"),
    params:
        out=lambda wc, output: parent(output[0], 2),
        preset=plan.models["sim_preset"],
        clip=plan.sim_chain_clip_opt(),
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_sim_captioner.log",
    threads: plan.threads("train_sim_captioner")
    resources:
        **plan.resources("train_sim_captioner"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-sim-models --only captioner --scale {params.preset} --threads {threads} "
        "{params.clip} --out {params.out} --quiet > {log} 2>&1"


rule train_sim_judge_clip:
    # nsd-sim's judge CLIP (models.judge_clip "sim"): the CLIP's recipe from another seed; evaluate
    # scores two-way identification and CLIP-S with it instead of the CLIP that decodes
    output:
        plan.sim_model_file("judge_clip"),
    params:
        out=lambda wc, output: parent(output[0], 2),
        preset=plan.models["sim_preset"],
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_sim_judge_clip.log",
    threads: plan.threads("train_sim_judge_clip")
    resources:
        **plan.resources("train_sim_judge_clip"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-sim-models --only judge_clip --scale {params.preset} --threads {threads} "
        "--out {params.out} --quiet > {log} 2>&1"


rule train_captioner:
    # the caption decoder trained here (models.captioner: {lm: DIR, train: {...}}): a ClipCap mapper
    # with the frozen language model, on the COCO captions of the embed file's images, never on the
    # shared test images (--nsd-root); decode reads it from the rule's output folder
    input:
        embed=plan.embed,
        nsd=plan.nsd_ready,
    output:
        f"{plan.captioner_dir}/config.json",
    params:
        out=lambda wc, output: parent(output[0], 1),
        lm=plan.captioner_lm_arg(),
        root=plan.nsd_root,
        opts=plan.captioner_train_opts(),
        device=plan.device_opt("train_captioner"),
        cli=CLI,
    log:
        f"{RESULTS}/logs/models/train_captioner.log",
    threads: plan.threads("train_captioner")
    resources:
        **plan.resources("train_captioner"),
    priority: PRIORITY["train_captioner"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} train-captioner --pairs {input.embed} --lm {params.lm} --nsd-root {params.root} "
        "{params.opts} --threads {threads} {params.device} --out {params.out} --quiet > {log} 2>&1"
