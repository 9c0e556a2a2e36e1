# Evaluate and report (issue 5): the metric battery per (method, subject), nsd-sim's oracle,
# results/eval/metrics.tsv with bootstrap CIs, and the HTML report. Each evaluate job scores a
# group of one subject's methods in one process (the judge CLIP, METEOR's Java and the stimuli
# load once). Two-way CLIP and CLIP-S are scored by the judge (models.judge_clip), never by the
# decoding CLIP; each method is scored on the infer protocol its decode folder decoded.


for _g, (_s, _ms) in plan.method_groups().items():

    rule:
        name:
            f"evaluate_{_g}"
        input:
            brain=[plan.brain_file(m, _s) for m in _ms],
            decode=[f"{plan.decode_out(m, _s)}/decode.h5" for m in _ms],
            embed=plan.embed,
            sim=plan.nsd_ready,  # the simulation's truth (scene attributes) comes with it
            judge=plan.judge_input(),
        output:
            [plan.part_file(m, _s) for m in _ms],
        params:
            decode=" ".join(plan.decode_out(m, _s) for m in _ms),
            root=plan.nsd_root,
            truth=plan.truth_opt(_s),
            judge=plan.judge_opts(),
            weights=plan.feature_weights_arg(),
            chain=plan.image_protocol_arg(),
            heads=plan.retrieval_heads_opt(_ms),
            device=plan.device_opt("evaluate"),
            cli=CLI,
        log:
            f"{RESULTS}/logs/eval/{_g}.log",
        threads: plan.threads("evaluate")
        resources:
            **plan.resources("evaluate"),
        priority: plan.group_priority("evaluate", _ms)
        conda:
            "../envs/braindecode.yaml"
        shell:
            "{params.cli} evaluate --brain {input.brain} --decode {params.decode} --embed {input.embed} "
            "--nsd-root {params.root} {params.truth} {params.judge} --feature-weights {params.weights} "
            "--image-protocol {params.chain} {params.heads} --threads {threads} {params.device} --out {output} "
            "> {log} 2>&1"


rule preprocess_psc:
    # nsd-sim's oracle needs the betas in PSC units (the truth's), not z-scored
    input:
        plan.nsd_ready,
    output:
        f"{RESULTS}/prep-psc/subj{{subject}}.h5",
    wildcard_constraints:
        subject=r"\d\d",
    params:
        root=plan.nsd_root,
        opts=plan.stage_opts("preprocess", normalisation="none"),
        cli=CLI,
    log:
        f"{RESULTS}/logs/preprocess/psc-subj{{subject}}.log",
    threads: plan.threads("preprocess_psc")
    resources:
        **plan.resources("preprocess_psc"),
    priority: PRIORITY["preprocess_psc"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} preprocess --nsd-root {params.root} --subject {wildcards.subject} "
        "{params.opts} --out {output} > {log} 2>&1"


rule oracle:
    input:
        psc=f"{RESULTS}/prep-psc/subj{{subject}}.h5",
        sim=plan.nsd_ready,
    output:
        plan.part_file("oracle", "{subject}"),
    wildcard_constraints:
        subject=r"\d\d",
    params:
        truth=lambda wc: f"{plan.sim_truth}/subj{wc.subject}.h5",
        cli=CLI,
    log:
        f"{RESULTS}/logs/eval/oracle-subj{{subject}}.log",
    threads: plan.threads("oracle")
    resources:
        **plan.resources("oracle"),
    priority: PRIORITY["oracle"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} evaluate --oracle {input.psc} --truth {params.truth} --out {output} > {log} 2>&1"


rule collect:
    input:
        plan.eval_parts(),
    output:
        tsv=f"{plan.eval_dir}/metrics.tsv",
        json=f"{plan.eval_dir}/metrics.json",
    params:
        cli=CLI,
    log:
        f"{RESULTS}/logs/eval/collect.log",
    threads: plan.threads("collect")
    resources:
        **plan.resources("collect"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} evaluate --collect {input} --out {output.tsv} --json {output.json} > {log} 2>&1"


rule report:
    input:
        metrics=f"{plan.eval_dir}/metrics.tsv",
        parts=f"{plan.eval_dir}/metrics.json",
        decodes=[f"{plan.decode_out(m, s)}/decode.h5" for m, s in plan.decode_methods()],
        embed=plan.embed,
        preps=[plan.prep_file(s) for s in plan.subjects],
        models=sorted({plan.model_file(m, s) for m, s in plan.brain_methods()}),
    output:
        f"{RESULTS}/report/index.html",
    params:
        root=plan.nsd_root,
        decode=lambda wc, input: parent(input.decodes[0], 3),  # DECODE/{method}/subjAA/decode.h5
        models=lambda wc, input: parent(input.models[0], 2),  # BRAIN_MODELS/{method}/model.safetensors
        preps=" ".join(f"{s}={plan.prep_file(s)}" for s in plan.subjects),
        heldout=f"--heldout {plan.heldout}" if plan.heldout else "",
        config=plan.config_arg(),
        simulated="--simulated" if plan.simulated else "",
        cli=CLI,
    log:
        f"{RESULTS}/logs/report.log",
    threads: plan.threads("report")
    resources:
        **plan.resources("report"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} report --metrics {input.metrics} --metrics-json {input.parts} --decode-root {params.decode} --embed {input.embed} "
        "--nsd-root {params.root} --prep {params.preps} --brain-models {params.models} {params.heldout} "
        "--config {params.config} {params.simulated} --out {output} > {log} 2>&1"
