# Evaluate and report (issue 5): the metric battery per (method, subject), nsd-sim's oracle,
# results/eval/metrics.tsv with bootstrap CIs, and the HTML report. Each evaluate job scores a
# group of one subject's methods in one process (CLIP, METEOR's Java and the stimuli load once).


for _g, (_s, _ms) in method_groups().items():

    rule:
        name:
            f"evaluate_{_g}"
        input:
            brain=[f"{RESULTS}/brain/{m}/subj{_s}.h5" for m in _ms],
            decode=[f"{DECODE}/{m}/subj{_s}/decode.h5" for m in _ms],
            embed=EMBED,
            sim=nsd_ready,  # the simulation's truth (scene attributes) comes with it
            models=trained_sim_input("clip"),
        output:
            [f"{EVAL}/parts/{m}/subj{_s}.h5" for m in _ms],
        params:
            decode=" ".join(f"{DECODE}/{m}/subj{_s}" for m in _ms),
            root=NSD_ROOT,
            truth=f"--truth {SIM_TRUTH}/subj{_s}.h5" if SIMULATED else "",
            clip=model_arg("clip"),
            sim_clip=sim_dir_opt("clip", "--sim-clip"),
            weights=shlex.quote(json.dumps({k: v for k, v in config["evaluate"]["feature_weights"].items() if v})),
            cli=CLI,
        log:
            f"{RESULTS}/logs/eval/{_g}.log",
        threads: job_threads("evaluate")
        resources:
            **job_resources("evaluate"),
        priority: PRIORITY["evaluate_main" if on_main_chain(_ms) else "evaluate"]
        conda:
            "../envs/braindecode.yaml"
        shell:
            "{params.cli} evaluate --brain {input.brain} --decode {params.decode} --embed {input.embed} "
            "--nsd-root {params.root} {params.truth} --clip {params.clip} {params.sim_clip} "
            "--feature-weights {params.weights} --threads {threads} --out {output} > {log} 2>&1"


rule preprocess_psc:
    # nsd-sim's oracle needs the betas in PSC units (the truth's), not z-scored
    input:
        nsd_ready,
    output:
        f"{RESULTS}/prep-psc/subj{{subject}}.h5",
    wildcard_constraints:
        subject=r"\d\d",
    params:
        root=NSD_ROOT,
        opts=lambda wc: " ".join(
            f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
            for k, v in {**config["preprocess"], "normalisation": "none"}.items()
        ),
        cli=CLI,
    log:
        f"{RESULTS}/logs/preprocess/psc-subj{{subject}}.log",
    threads: job_threads("preprocess_psc")
    resources:
        **job_resources("preprocess_psc"),
    priority: PRIORITY["preprocess_psc"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} preprocess --nsd-root {params.root} --subject {wildcards.subject} "
        "{params.opts} --out {output} > {log} 2>&1"


rule oracle:
    input:
        psc=f"{RESULTS}/prep-psc/subj{{subject}}.h5",
        sim=nsd_ready,
    output:
        f"{EVAL}/parts/oracle/subj{{subject}}.h5",
    wildcard_constraints:
        subject=r"\d\d",
    params:
        truth=lambda wc: f"{SIM_TRUTH}/subj{wc.subject}.h5",
        cli=CLI,
    log:
        f"{RESULTS}/logs/eval/oracle-subj{{subject}}.log",
    threads: job_threads("oracle")
    resources:
        **job_resources("oracle"),
    priority: PRIORITY["oracle"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} evaluate --oracle {input.psc} --truth {params.truth} --out {output} > {log} 2>&1"


rule collect:
    input:
        eval_parts(),
    output:
        tsv=f"{EVAL}/metrics.tsv",
        json=f"{EVAL}/metrics.json",
    params:
        cli=CLI,
    log:
        f"{RESULTS}/logs/eval/collect.log",
    threads: job_threads("collect")
    resources:
        **job_resources("collect"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} evaluate --collect {input} --out {output.tsv} --json {output.json} > {log} 2>&1"


rule report:
    input:
        metrics=f"{EVAL}/metrics.tsv",
        decodes=[f"{DECODE}/{m}/subj{s}/decode.h5" for m, s in decode_methods()],
        embed=EMBED,
        preps=[prep_file(s) for s in SUBJECTS],
        models=sorted({model_file(m, s) for m, s in brain_methods()}),
    output:
        f"{RESULTS}/report/index.html",
    params:
        root=NSD_ROOT,
        decode=lambda wc, input: parent(input.decodes[0], 3),  # DECODE/{method}/subjAA/decode.h5
        models=lambda wc, input: parent(input.models[0], 2),  # BRAIN_MODELS/{method}/model.safetensors
        preps=" ".join(f"{s}={prep_file(s)}" for s in SUBJECTS),
        heldout=f"--heldout {HELDOUT}" if HELDOUT else "",
        config=shlex.quote(json.dumps(config, sort_keys=True)),
        simulated="--simulated" if SIMULATED else "",
        cli=CLI,
    log:
        f"{RESULTS}/logs/report.log",
    threads: job_threads("report")
    resources:
        **job_resources("report"),
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} report --metrics {input.metrics} --decode-root {params.decode} --embed {input.embed} "
        "--nsd-root {params.root} --prep {params.preps} --brain-models {params.models} {params.heldout} "
        "--config {params.config} {params.simulated} --out {output} > {log} 2>&1"
