# Decode (issue 5): every method's test-set predictions → retrieved images, reconstructions and
# captions; and the stimuli's true embeddings in the same layout (method true_embedding).
# Each decode job decodes a group of one subject's methods in one process (method_groups()).


rule true_embedding:
    input:
        prep=lambda wc: prep_file(wc.subject),
        embed=EMBED,
        latent=latent_input(),
    output:
        f"{RESULTS}/brain/true_embedding/subj{{subject}}.h5",
    wildcard_constraints:
        subject=r"\d\d",
    params:
        latent=latent_opt,
        cli=CLI,
    log:
        f"{RESULTS}/logs/brain/true_embedding-subj{{subject}}.log",
    threads: job_threads("true_embedding")
    resources:
        **job_resources("true_embedding"),
    priority: PRIORITY["true_embedding"]
    conda:
        "../envs/braindecode.yaml"
    shell:
        "{params.cli} infer --true-embedding {input.embed} {params.latent} --prep {input.prep} "
        "--subject {wildcards.subject} "
        "--out {output} > {log} 2>&1"


for _g, (_s, _ms) in method_groups().items():

    rule:
        name:
            f"decode_{_g}"
        input:
            brain=[f"{RESULTS}/brain/{m}/subj{_s}.h5" for m in _ms],
            embed=EMBED,
            models=[trained_sim_input(k) for k in ("clip", "image_decoder", "captioner")],
        output:
            [f"{DECODE}/{m}/subj{_s}/decode.h5" for m in _ms],
        params:
            out=" ".join(f"{DECODE}/{m}/subj{_s}" for m in _ms),
            image_decoder=model_arg("image_decoder"),
            captioner=model_arg("captioner"),
            clip=model_arg("clip"),
            sims=" ".join(sim_dir_opt(k, f"--sim-{k.replace('_', '-')}") for k in ("clip", "image_decoder", "captioner")),
            sets=decode_sets(),
            cli=CLI,
        log:
            f"{RESULTS}/logs/decode/{_g}.log",
        threads: job_threads("decode")
        resources:
            **job_resources("decode"),
        priority: PRIORITY["decode_main" if on_main_chain(_ms) else "decode"]
        conda:
            "../envs/braindecode.yaml"
        shell:
            "{params.cli} decode --brain {input.brain} --embed {input.embed} --image-decoder {params.image_decoder} "
            "--captioner {params.captioner} --clip {params.clip} {params.sims} {params.sets} --threads {threads} "
            "--out {params.out} --quiet > {log} 2>&1"
