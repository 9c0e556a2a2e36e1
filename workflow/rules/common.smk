# Values every rule shares, derived from the validated config.
import json
import os
import shlex
import sys

RESULTS = config["results"]
SUBJECTS = [f"{s:02d}" for s in config["subjects"]]
SIMULATED = config["nsd_root"] is None
NSD_ROOT = f"{RESULTS}/sim/nsd" if SIMULATED else config["nsd_root"]
SIM_MANIFEST = f"{RESULTS}/sim/sim_truth/manifest.json"
# the Python that runs snakemake runs the stages too (same environment, no PATH assumptions)
CLI = shlex.quote(sys.executable) + " -m braindecode_pkg"


def nsd_ready(wildcards):
    """The simulated dataset when nsd-sim is used; nothing to wait for with real NSD."""
    return [SIM_MANIFEST] if SIMULATED else []


def sim_overrides():
    """`--set KEY=VALUE` options for `braindecode-pkg simulate`: the configured subjects and
    config["sim"]["overrides"]."""
    items = {"subjects": config["subjects"], **config["sim"].get("overrides", {})}.items()
    return " ".join(f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in items)

MODELS = config["models"]
# nsd-sim's own models trained by this workflow (models.sim_weights: train) rather than shipped
TRAIN_SIM = MODELS["sim_weights"] == "train"
SIM_MODELS = f"{RESULTS}/models/nsd-sim"
# the file each trained sim model's folder is known by
from braindecode_pkg.models.sim_chain import MARKER as SIM_MODEL_FILE


def model_arg(kind):
    """The command-line value of a model config: 'sim' or its JSON."""
    value = MODELS[kind]
    return shlex.quote(value if isinstance(value, str) else json.dumps(value, sort_keys=True))


def trained_sim(kind):
    """The folder of sim model `kind` when this workflow trains it and the config uses it, else None."""
    return f"{SIM_MODELS}/{kind}" if TRAIN_SIM and MODELS[kind] == "sim" else None


def sim_chain_clip_opt():
    """train-sim-models' decoders follow the sim CLIP's chain, or train in one stage on another CLIP."""
    return "" if MODELS["clip"] == "sim" else f"--clip {model_arg('clip')}"


def trained_sim_input(kind):
    """Input function: the trained sim model's marker file, or nothing (shipped or real weights)."""
    d = trained_sim(kind)
    return [f"{d}/{SIM_MODEL_FILE[kind]}"] if d else []


def clip_input():
    """What the embed stage reads besides the data: the sim CLIP trained here, or the shipped
    weights file (so that new shipped weights re-embed); real weights are checked at parse time."""
    if MODELS["clip"] != "sim":
        return []
    if TRAIN_SIM:
        return trained_sim_input("clip")
    from braindecode_pkg.models.clip import SHIPPED_SIM_CLIP

    return [str(SHIPPED_SIM_CLIP / "open_clip_model.safetensors")]


def sim_dir_opt(kind, flag):
    """`--sim-clip DIR`-style option pointing a stage at a sim model trained here (else empty)."""
    d = trained_sim(kind)
    return f"{flag} {shlex.quote(d)}" if d else ""


def check_model_configs():
    """Real weights named in models.* must exist: one clear message before any job runs.

    Only the paths are checked (nothing is loaded); "sim" needs no check (shipped or trained here).
    """
    import importlib

    from braindecode_pkg.errors import InputError

    parsers = {
        "clip": ("braindecode_pkg.models.clip", "parse_clip_config"),
        "image_decoder": ("braindecode_pkg.models.image_decoder", "parse_image_decoder_config"),
        "captioner": ("braindecode_pkg.models.captioner", "parse_captioner_config"),
    }
    for kind, (module, name) in parsers.items():
        if MODELS[kind] != "sim":
            try:
                getattr(importlib.import_module(module), name)(MODELS[kind])
            except InputError as e:
                raise ValueError(f"config models.{kind}: {e}") from None


check_model_configs()


def check_inputs():
    """Cheap checks (milliseconds) before any job runs. On real NSD: each subject present, the
    image brick in NSD's layout, the caption files looking like COCO JSON, and the files the stages
    start from present (each subject's ROI and first beta file, the stimulus table). Feature-net weights
    files are checked without unpickling."""
    from braindecode_pkg.data.layout import check_root
    from braindecode_pkg.data.stimuli import check_nsd_root
    from braindecode_pkg.errors import InputError
    from braindecode_pkg.weights_file import check_weights_file

    pre = config["preprocess"]
    try:
        if not SIMULATED:
            check_nsd_root(NSD_ROOT, config["subjects"])
            check_root(NSD_ROOT, config["subjects"], roi=pre["roi"], fmt=pre["format"], sessions=pre["sessions"],
                       resolution=pre["resolution"], beta_version=pre["beta_version"])
    except InputError as e:
        raise ValueError(f"config nsd_root: {e}") from None
    for net, path in config["evaluate"]["feature_weights"].items():
        if path:
            try:
                check_weights_file(path, f"evaluate.feature_weights.{net}")
            except InputError as e:
                raise ValueError(f"config evaluate.feature_weights.{net}: {e}") from None


check_inputs()


BRAIN = config["brain"]
HELDOUT = None if BRAIN["heldout"] is None else f"{BRAIN['heldout']:02d}"
if HELDOUT is not None and HELDOUT not in SUBJECTS:
    raise ValueError(f"config brain.heldout: subject {BRAIN['heldout']} is not in subjects {config['subjects']}")
PRETRAIN_SUBJECTS = [s for s in SUBJECTS if s != HELDOUT]
if not PRETRAIN_SUBJECTS:
    raise ValueError("config brain.heldout: no subject left to pretrain on")
KS = sorted(BRAIN["sessions"]) if HELDOUT is not None else []
EMBED = f"{RESULTS}/embed/clip.h5"
# the low-level head: brain.heads naming "latent" trains it on the image decoder's VAE latents
_HEADS = BRAIN["heads"].split(",")
WANT_LATENT = "latent" in _HEADS
CLIP_HEADS = ",".join(h for h in _HEADS if h != "latent") or "available"
# ridge fits these CLIP heads (default: the brain model's)
RIDGE_HEADS = BRAIN.get("ridge_heads") or CLIP_HEADS
LATENT = f"{RESULTS}/embed/latent.h5"


def latent_input():
    return [LATENT] if WANT_LATENT else []


def latent_opt(wc, input):
    return f"--latent {input.latent[0]}" if WANT_LATENT else ""


BRAIN_MODELS = f"{RESULTS}/models/brain"


def prep_file(subject):
    return f"{RESULTS}/prep/subj{subject}.h5"


def regime_sets(regime):
    """`--set SECTION.KEY=VALUE` options of a regime's run config (adapt/scratch inherit pretrain's
    model and loss sections unless they give their own)."""
    sections = dict(BRAIN[regime])
    if regime != "pretrain":
        for sec in ("model", "loss"):
            sections.setdefault(sec, BRAIN["pretrain"].get(sec, {}))
        if regime == "adapt":
            sections.pop("model", None)  # the architecture comes from the pretrained model
    return " ".join(
        f"--set {shlex.quote(f'{sec}.{k}={json.dumps(v)}')}"
        for sec, values in sections.items() for k, v in (values or {}).items()
    )


def brain_methods():
    """(method, subject) pairs whose test-set brain embeddings the workflow produces."""
    pairs = [("pretrain", s) for s in PRETRAIN_SUBJECTS] + [("ridge-all", s) for s in PRETRAIN_SUBJECTS]
    for k in KS:
        pairs += [(f"{m}-k{k}", HELDOUT) for m in ("adapt", "scratch", "ridge")]
    return pairs


def parent(path, n):
    """The folder `n` levels above `path`."""
    for _ in range(n):
        path = os.path.dirname(path)
    return path


def model_file(method, subject):
    """The model folder's weights file a method's embeddings come from."""
    if method.startswith("ridge-"):
        return f"{BRAIN_MODELS}/{method}/subj{subject}/model.safetensors"
    return f"{BRAIN_MODELS}/{method}/model.safetensors"


def method_model(wc):
    return model_file(wc.method, wc.subject)


def decode_methods():
    """(method, subject) pairs decoded and scored: the brain methods and, per subject, the true
    embeddings (the decoders' ceiling)."""
    return brain_methods() + [("true_embedding", s) for s in SUBJECTS]


def methods_of(subject):
    """The methods decoded and scored for one subject."""
    return [m for m, s in decode_methods() if s == subject]


# decode and evaluate run one job per group of up to GROUP methods of one subject: the models,
# the stimuli and METEOR's Java load once per job, and the held-out subject's many methods still
# spread over the cores
GROUP = 4


def method_groups():
    """{job name: (subject, [methods])}: each subject's methods in near-equal groups of <= GROUP."""
    out = {}
    for s in SUBJECTS:
        ms = methods_of(s)
        k = -(-len(ms) // GROUP)
        for i in range(k):
            out[f"subj{s}" + (f"_{i + 1}" if k > 1 else "")] = (s, ms[i::k])
    return out


# Scheduling on few cores. The longest chain of the default run is simulate -> preprocess -> embed
# -> pretrain -> adapt -> infer -> decode -> evaluate of the held-out subject; Snakemake starts the
# ready jobs of highest priority first, so the jobs on that chain come first and the rest (scratch,
# ridge, the other subjects' decoding, the oracle) fill the free cores. Priorities only order
# jobs: they change no output.
PRIORITY = {
    "preprocess": 90, "latents": 85, "embed": 80, "pretrain": 70, "adapt": 60,
    "true_embedding": 55, "infer_main": 50, "decode_main": 45, "evaluate_main": 40,
    "scratch": 35, "ridge": 30, "infer": 25, "decode": 20, "evaluate": 15, "preprocess_psc": 5,
    "oracle": 5,
}


def on_main_chain(methods):
    """Whether the pretrained/adapted models' embeddings are among `methods`."""
    return any(m == "pretrain" or m.startswith("adapt-") for m in methods)


def infer_priority(wildcards):
    return PRIORITY["infer_main" if on_main_chain([wildcards.method]) else "infer"]


def decode_sets():
    """`--set KEY=VALUE` options of the decode stage (config section decode)."""
    return " ".join(f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in config["decode"].items())


DECODE = f"{RESULTS}/decode"
EVAL = f"{RESULTS}/eval"
SIM_TRUTH = f"{RESULTS}/sim/sim_truth"


def eval_parts():
    """Every part file collected into metrics.tsv (the oracle's on nsd-sim)."""
    parts = [f"{EVAL}/parts/{m}/subj{s}.h5" for m, s in decode_methods()]
    if SIMULATED:
        parts += [f"{EVAL}/parts/oracle/subj{s}.h5" for s in SUBJECTS]
    return parts


# Job resources from config["resources"] (braindecode_pkg.resources), per rule. The threads of
# a job are its configured cpus; mem_mb, runtime (minutes), gpu and slurm_partition are what a
# cluster executor (workflow/profiles/slurm) asks for. Locally only the threads matter.
from braindecode_pkg import resources as _resources
from braindecode_pkg.errors import InputError as _InputError


def _rule_res(rule):
    try:
        return _resources.rule_resources(config["resources"], rule)
    except _InputError as e:
        raise ValueError(f"config {e}") from None


def job_threads(rule):
    return int(_rule_res(rule)["cpus"])


def job_resources(rule):
    return _resources.snakemake_resources(_rule_res(rule))


def train_gpus(regime):
    return int(_rule_res(regime)["gpus"])


def train_launcher(wildcards, resources):
    """Params function of a training rule: `python -m braindecode_pkg`, or `accelerate launch` on
    one process per GPU when the job has more than one (its gpu resource: the config's, or what
    --set-resources gives)."""
    return _resources.launcher(sys.executable, int(resources.gpu))


def train_threads(wildcards, threads, resources):
    """Params function: torch threads of each training process (the job's threads, after --cores
    and --set-threads, shared by its processes)."""
    return _resources.threads_per_process(threads, int(resources.gpu))


def _check_train_batches():
    from braindecode_pkg.train import TrainConfig

    for regime in _resources.TRAIN_RULES:
        batch = (BRAIN[regime].get("train") or {}).get("batch_size", TrainConfig.batch_size)
        try:
            _resources.check_batch(regime, batch, train_gpus(regime))
        except _InputError as e:
            raise ValueError(f"config {e}") from None


_check_train_batches()
