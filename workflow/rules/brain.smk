# The brain model's regimes (issue 4): pretrain on every subject but the held-out one; adapt the
# held-out subject from its first K sessions; the same from scratch; ridge per subject; and the
# test-set brain embeddings of each (method, subject).


rule pretrain:
    input:
        prep=[plan.prep_file(s) for s in plan.pretrain_subjects],
        embed=plan.embed,
        latent=plan.latent_input(),
    output:
        plan.model_file("pretrain", None),
    params:
        prep=plan.prep_args(plan.pretrain_subjects),
        sets=plan.regime_sets("pretrain"),
        validation=plan.validation_opt(),
        heads=plan.clip_heads,
        latent=plan.latent_opt,
        out=lambda wc, output: os.path.dirname(output[0]),
        launch=plan.train_launcher,
        threads=plan.train_threads,
    log:
        f"{RESULTS}/logs/brain/pretrain.log",
    threads: plan.threads("pretrain")
    resources:
        **plan.resources("pretrain"),
    priority: PRIORITY["pretrain"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.launch} train --regime pretrain --prep {params.prep} --embed {input.embed} {params.latent} "
        "--heads {params.heads} {params.sets} {params.validation} --set train.threads={params.threads} "
        "--out {params.out} --quiet > {log} 2>&1"


rule adapt:
    input:
        prep=plan.prep_file(plan.heldout) if plan.heldout else [],
        embed=plan.embed,
        latent=plan.latent_input(),
        init=rules.pretrain.output[0],
    output:
        plan.model_file("adapt-k{k}", None),
    wildcard_constraints:
        k=r"\d+",
    params:
        subject=lambda wc: int(plan.heldout),
        latent=plan.latent_opt,
        sets=plan.regime_sets("adapt"),
        validation=plan.validation_opt(),
        init=lambda wc, input: os.path.dirname(input.init),
        out=lambda wc, output: os.path.dirname(output[0]),
        launch=plan.train_launcher,
        threads=plan.train_threads,
    log:
        f"{RESULTS}/logs/brain/adapt-k{{k}}.log",
    threads: plan.threads("adapt")
    resources:
        **plan.resources("adapt"),
    priority: PRIORITY["adapt"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.launch} train --regime adapt --prep {params.subject}={input.prep} --embed {input.embed} {params.latent} "
        "--init {params.init} --sessions first:{wildcards.k} {params.sets} {params.validation} "
        "--set train.threads={params.threads} "
        "--out {params.out} --quiet > {log} 2>&1"


rule scratch:
    input:
        prep=plan.prep_file(plan.heldout) if plan.heldout else [],
        embed=plan.embed,
        latent=plan.latent_input(),
    output:
        plan.model_file("scratch-k{k}", None),
    wildcard_constraints:
        k=r"\d+",
    params:
        subject=lambda wc: int(plan.heldout),
        sets=plan.regime_sets("scratch"),
        validation=plan.validation_opt(),
        heads=plan.clip_heads,
        latent=plan.latent_opt,
        out=lambda wc, output: os.path.dirname(output[0]),
        launch=plan.train_launcher,
        threads=plan.train_threads,
    log:
        f"{RESULTS}/logs/brain/scratch-k{{k}}.log",
    threads: plan.threads("scratch")
    resources:
        **plan.resources("scratch"),
    priority: PRIORITY["scratch"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.launch} train --regime scratch --prep {params.subject}={input.prep} --embed {input.embed} {params.latent} "
        "--heads {params.heads} --sessions first:{wildcards.k} {params.sets} {params.validation} "
        "--set train.threads={params.threads} "
        "--out {params.out} --quiet > {log} 2>&1"


rule ridge:
    input:
        prep=lambda wc: plan.prep_file(wc.subject),
        embed=plan.embed,
    output:
        plan.model_file("ridge-{sel}", "{subject}"),
    wildcard_constraints:
        sel=r"all|k\d+",
        subject=r"\d\d",
    params:
        sessions=lambda wc: "all" if wc.sel == "all" else f"first:{wc.sel[1:]}",
        heads=plan.ridge_heads,  # ridge maps to CLIP heads only (brain.ridge_heads; default the model's)
        validation=plan.validation_opt(),
        out=lambda wc, output: os.path.dirname(output[0]),
        cli=CLI,
    log:
        f"{RESULTS}/logs/brain/ridge-{{sel}}-subj{{subject}}.log",
    threads: plan.threads("ridge")
    resources:
        **plan.resources("ridge"),
    priority: PRIORITY["ridge"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} ridge --prep {input.prep} --embed {input.embed} --sessions {params.sessions} "
        "--heads {params.heads} {params.validation} --threads {threads} --out {params.out} > {log} 2>&1"


rule infer:
    input:
        model=plan.method_model,
        prep=lambda wc: plan.prep_file(wc.subject),
    output:
        plan.brain_file("{method}", "{subject}"),
    wildcard_constraints:
        method=r"pretrain|(adapt|scratch|ridge)-k\d+|ridge-all",
        subject=r"\d\d",
    params:
        model=lambda wc, input: os.path.dirname(input.model),
        device=plan.device_opt("infer"),
        opts=lambda wc: plan.infer_opts(wc.method),
        cli=CLI,
    log:
        f"{RESULTS}/logs/brain/infer-{{method}}-subj{{subject}}.log",
    threads: plan.threads("infer")
    resources:
        **plan.resources("infer"),
    priority: plan.infer_priority
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} infer --model {params.model} --prep {input.prep} --subject {wildcards.subject} "
        "--method {wildcards.method} {params.opts} --threads {threads} {params.device} --out {output} > {log} 2>&1"
