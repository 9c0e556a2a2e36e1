# Decode (issue 5): every method's test-set predictions → retrieved images, reconstructions and
# captions; and the stimuli's true embeddings in the same layout (method true_embedding).
# Each decode job decodes a group of one subject's methods in one process (plan.method_groups()).


rule true_embedding:
    input:
        prep=lambda wc: plan.prep_file(wc.subject),
        embed=plan.embed,
        latent=plan.latent_input(),
    output:
        plan.brain_file("true_embedding", "{subject}"),
    wildcard_constraints:
        subject=r"\d\d",
    params:
        latent=plan.latent_opt,
        cli=CLI,
    log:
        f"{RESULTS}/logs/brain/true_embedding-subj{{subject}}.log",
    threads: plan.threads("true_embedding")
    resources:
        **plan.resources("true_embedding"),
    priority: PRIORITY["true_embedding"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} infer --true-embedding {input.embed} {params.latent} --prep {input.prep} "
        "--subject {wildcards.subject} "
        "--out {output} > {log} 2>&1"


for _g, (_s, _ms) in plan.method_groups().items():

    rule:
        name:
            f"decode_{_g}"
        input:
            brain=[plan.brain_file(m, _s) for m in _ms],
            embed=plan.embed,
            models=plan.decoders_input(),
        output:
            [f"{plan.decode_out(m, _s)}/decode.h5" for m in _ms],
        params:
            out=" ".join(plan.decode_out(m, _s) for m in _ms),
            models=plan.decoders_opts(),
            sets=plan.decode_sets(),
            device=plan.device_opt("decode"),
            cli=CLI,
        log:
            f"{RESULTS}/logs/decode/{_g}.log",
        threads: plan.threads("decode")
        resources:
            **plan.resources("decode"),
        priority: plan.group_priority("decode", _ms)
        conda:
            "../envs/braindecode.yaml"
        shell:
            "{params.cli} decode --brain {input.brain} --embed {input.embed} {params.models} {params.sets} "
            "--threads {threads} {params.device} --out {params.out} --quiet > {log} 2>&1"
