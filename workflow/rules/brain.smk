# The brain model's regimes (issue 4): pretrain on every subject but the held-out one; adapt the
# held-out subject from its first K sessions; the same from scratch; ridge per subject; and the
# test-set brain embeddings of each (method, subject).


rule pretrain:
    input:
        prep=[prep_file(s) for s in PRETRAIN_SUBJECTS],
        embed=EMBED,
        latent=latent_input(),
    output:
        f"{BRAIN_MODELS}/pretrain/model.safetensors",
    params:
        prep=" ".join(f"{int(s)}={prep_file(s)}" for s in PRETRAIN_SUBJECTS),
        sets=regime_sets("pretrain"),
        heads=CLIP_HEADS,
        latent=latent_opt,
        out=lambda wc, output: os.path.dirname(output[0]),
        launch=train_launcher,
        threads=train_threads,
    log:
        f"{RESULTS}/logs/brain/pretrain.log",
    threads: job_threads("pretrain")
    resources:
        **job_resources("pretrain"),
    priority: PRIORITY["pretrain"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.launch} train --regime pretrain --prep {params.prep} --embed {input.embed} {params.latent} "
        "--heads {params.heads} {params.sets} --set train.threads={params.threads} --out {params.out} --quiet "
        "> {log} 2>&1"


rule adapt:
    input:
        prep=prep_file(HELDOUT) if HELDOUT else [],
        embed=EMBED,
        latent=latent_input(),
        init=rules.pretrain.output[0],
    output:
        f"{BRAIN_MODELS}/adapt-k{{k}}/model.safetensors",
    wildcard_constraints:
        k=r"\d+",
    params:
        subject=lambda wc: int(HELDOUT),
        latent=latent_opt,
        sets=regime_sets("adapt"),
        init=lambda wc, input: os.path.dirname(input.init),
        out=lambda wc, output: os.path.dirname(output[0]),
        launch=train_launcher,
        threads=train_threads,
    log:
        f"{RESULTS}/logs/brain/adapt-k{{k}}.log",
    threads: job_threads("adapt")
    resources:
        **job_resources("adapt"),
    priority: PRIORITY["adapt"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.launch} train --regime adapt --prep {params.subject}={input.prep} --embed {input.embed} {params.latent} "
        "--init {params.init} --sessions first:{wildcards.k} {params.sets} --set train.threads={params.threads} "
        "--out {params.out} --quiet > {log} 2>&1"


rule scratch:
    input:
        prep=prep_file(HELDOUT) if HELDOUT else [],
        embed=EMBED,
        latent=latent_input(),
    output:
        f"{BRAIN_MODELS}/scratch-k{{k}}/model.safetensors",
    wildcard_constraints:
        k=r"\d+",
    params:
        subject=lambda wc: int(HELDOUT),
        sets=regime_sets("scratch"),
        heads=CLIP_HEADS,
        latent=latent_opt,
        out=lambda wc, output: os.path.dirname(output[0]),
        launch=train_launcher,
        threads=train_threads,
    log:
        f"{RESULTS}/logs/brain/scratch-k{{k}}.log",
    threads: job_threads("scratch")
    resources:
        **job_resources("scratch"),
    priority: PRIORITY["scratch"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.launch} train --regime scratch --prep {params.subject}={input.prep} --embed {input.embed} {params.latent} "
        "--heads {params.heads} --sessions first:{wildcards.k} {params.sets} --set train.threads={params.threads} "
        "--out {params.out} --quiet > {log} 2>&1"


rule ridge:
    input:
        prep=lambda wc: prep_file(wc.subject),
        embed=EMBED,
    output:
        f"{BRAIN_MODELS}/ridge-{{sel}}/subj{{subject}}/model.safetensors",
    wildcard_constraints:
        sel=r"all|k\d+",
        subject=r"\d\d",
    params:
        sessions=lambda wc: "all" if wc.sel == "all" else f"first:{wc.sel[1:]}",
        heads=RIDGE_HEADS,  # ridge maps to CLIP heads only (brain.ridge_heads; default the model's)
        out=lambda wc, output: os.path.dirname(output[0]),
        cli=CLI,
    log:
        f"{RESULTS}/logs/brain/ridge-{{sel}}-subj{{subject}}.log",
    threads: job_threads("ridge")
    resources:
        **job_resources("ridge"),
    priority: PRIORITY["ridge"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} ridge --prep {input.prep} --embed {input.embed} --sessions {params.sessions} "
        "--heads {params.heads} --threads {threads} --out {params.out} > {log} 2>&1"


rule infer:
    input:
        model=method_model,
        prep=lambda wc: prep_file(wc.subject),
    output:
        f"{RESULTS}/brain/{{method}}/subj{{subject}}.h5",
    wildcard_constraints:
        method=r"pretrain|(adapt|scratch|ridge)-k\d+|ridge-all",
        subject=r"\d\d",
    params:
        model=lambda wc, input: os.path.dirname(input.model),
        cli=CLI,
    log:
        f"{RESULTS}/logs/brain/infer-{{method}}-subj{{subject}}.log",
    threads: job_threads("infer")
    resources:
        **job_resources("infer"),
    priority: infer_priority
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} infer --model {params.model} --prep {input.prep} --subject {wildcards.subject} "
        "--method {wildcards.method} --threads {threads} --out {output} > {log} 2>&1"
