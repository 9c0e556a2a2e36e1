"""What the workflow's rules need, derived from the validated config: one :class:`Plan`.

``workflow/rules/common.smk`` builds ``plan = Plan(config)`` and every rule reads its paths,
inputs, command-line options, job resources and priorities from it, so the ``.smk`` files keep
only rules and everything here is unit-tested without Snakemake. Building a plan runs the
cheap checks (milliseconds) that stop a bad config before any job starts, each as one
``ValueError`` naming the config key: real weights that are missing, nsd-sim's own models named
with a real NSD root, an NSD root that lacks what the stages start from, feature-net weights that
are not state dicts, a held-out subject that is not configured, a training batch that does not
divide over the configured GPUs.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from ..errors import InputError
from . import resources as res

__all__ = ["Plan", "PRIORITY", "GROUP", "parent", "names_sim"]

# decode and evaluate run one job per group of up to GROUP methods of one subject: the models,
# the stimuli and METEOR's Java load once per job, and the held-out subject's many methods still
# spread over the cores
GROUP = 4

# Scheduling on few cores. The longest chain of the default run is simulate -> preprocess -> embed
# -> pretrain -> adapt -> infer -> decode -> evaluate of the held-out subject; Snakemake starts the
# ready jobs of highest priority first, so the jobs on that chain come first and the rest (scratch,
# ridge, the other subjects' decoding, the oracle) fill the free cores. Priorities only order
# jobs: they change no output.
PRIORITY = {
    "preprocess": 90, "latents": 85, "embed": 80, "pretrain": 70, "adapt": 60, "train_captioner": 58,
    "true_embedding": 55, "infer_main": 50, "decode_main": 45, "evaluate_main": 40,
    "scratch": 35, "ridge": 30, "infer": 25, "decode": 20, "evaluate": 15, "preprocess_psc": 5,
    "oracle": 5,
}

_MODEL_PARSERS = {
    "clip": ("braindecode_pkg.decoders.clip", "parse_clip_config"),
    "image_decoder": ("braindecode_pkg.decoders.image_decoder", "parse_image_decoder_config"),
    "captioner": ("braindecode_pkg.decoders.captioner", "parse_captioner_config"),
}
_DECODERS = ("clip", "image_decoder", "captioner")
#: options of models.captioner.train (train-captioner's, for --pairs)
CAPTIONER_TRAIN_KEYS = ("steps", "batch_size", "seed", "preset", "minutes", "eval_every")


def names_sim(spec) -> bool:
    """Whether a model config names nsd-sim's own model: ``"sim"``, or a mapping one of whose
    values is ``"sim"`` (``{local_dir: sim}``, ``{pipeline_dir: sim}``, ``{dir: sim, ...}``)."""
    if isinstance(spec, dict):
        return any(isinstance(v, str) and v.strip() == "sim" for v in spec.values())
    return isinstance(spec, str) and spec.strip() == "sim"


def parent(path: str, n: int) -> str:
    """The folder ``n`` levels above ``path``."""
    for _ in range(n):
        path = os.path.dirname(path)
    return path


def _sets(prefix: str, values: dict) -> str:
    """``--set KEY=VALUE`` options (VALUE as JSON, which is YAML), shell-quoted."""
    return " ".join(f"--set {shlex.quote(f'{prefix}{k}={json.dumps(v)}')}" for k, v in values.items())


class Plan:
    """The workflow's targets, inputs and options for one validated ``config``.

    ``python``: the interpreter that runs the stages (default: the one running Snakemake, so the
    stages run in the same environment, with no assumption about PATH). ``check``: run the
    parse-time checks (:meth:`check`).
    """

    def __init__(self, config: dict, *, python: str | None = None, check: bool = True):
        self.config = config
        self.results = config["results"]
        self.subjects = [f"{s:02d}" for s in config["subjects"]]
        self.simulated = config["nsd_root"] is None
        self.nsd_root = f"{self.results}/sim/nsd" if self.simulated else config["nsd_root"]
        self.sim_truth = f"{self.results}/sim/sim_truth"
        self.sim_manifest = f"{self.sim_truth}/manifest.json"
        self.python = python or sys.executable
        self.cli = shlex.quote(self.python) + " -m braindecode_pkg"
        self.models = dict(config["models"])
        # nsd-sim's own models trained by this workflow (models.sim_weights: train), not shipped
        self.train_sim = self.models["sim_weights"] == "train"
        self.sim_models = f"{self.results}/models/nsd-sim"
        # a caption decoder trained here on the embed file's captions (models.captioner: {lm, train});
        # "train: null" trains none (a config file merged over one that trains can name a mapper)
        cap = self.models["captioner"]
        if isinstance(cap, dict) and "train" in cap and cap["train"] is None:
            cap = self.models["captioner"] = {k: v for k, v in cap.items() if k != "train"}
        self.captioner_trained = isinstance(cap, dict) and "train" in cap
        self.captioner_train = cap.get("train") if self.captioner_trained else None
        self.captioner_dir = f"{self.results}/models/captioner"
        brain = self.brain = config["brain"]
        self.heldout = None if brain["heldout"] is None else f"{brain['heldout']:02d}"
        self.pretrain_subjects = [s for s in self.subjects if s != self.heldout]
        self.ks = sorted(brain["sessions"]) if self.heldout is not None else []
        self.embed = f"{self.results}/embed/clip.h5"
        self.latent = f"{self.results}/embed/latent.h5"
        # the low-level head: brain.heads naming "latent" trains it on the image decoder's VAE latents
        heads = brain["heads"].split(",")
        self.want_latent = "latent" in heads
        self.clip_heads = ",".join(h for h in heads if h != "latent") or "available"
        # ridge fits these CLIP heads (default: the brain model's)
        self.ridge_heads = brain.get("ridge_heads") or self.clip_heads
        self.brain_models = f"{self.results}/models/brain"
        self.decode_dir = f"{self.results}/decode"
        self.eval_dir = f"{self.results}/eval"
        if check:
            self.check()

    # ------------------------------------------------------------------------ parse-time checks
    def check(self) -> None:
        """Every check a config gets before any job runs (each a ``ValueError`` naming the key)."""
        if self.heldout is not None and self.heldout not in self.subjects:
            raise ValueError(f"config brain.heldout: subject {self.brain['heldout']} is not in subjects "
                             f"{self.config['subjects']}")
        if not self.pretrain_subjects:
            raise ValueError("config brain.heldout: no subject left to pretrain on")
        self.check_decode()
        self.check_model_configs()
        self.check_inputs()
        self.check_real_models()
        self.check_train_batches()
        self.check_evaluate()

    def model_section(self, regime: str) -> dict:
        """The effective ``model`` section of a regime (adapt: the pretrained model's; scratch:
        pretrain's unless it gives its own)."""
        own = (self.brain[regime] or {}).get("model")
        if regime == "adapt" or own is None:
            return dict((self.brain["pretrain"] or {}).get("model") or {})
        return dict(own)

    def has_prior(self, method: str) -> bool:
        """Whether a method's model has a diffusion prior (ridge and true embeddings never do)."""
        if method.startswith(("ridge", "true_embedding")):
            return False
        regime = "pretrain" if method == "pretrain" else method.split("-")[0]
        return self.model_section(regime).get("prior") is not None

    def check_decode(self) -> None:
        """The decode recipe asks only for what the brain models will have."""
        d = self.config["decode"]
        if d.get("source", "direction") == "prior":
            lacking = [r for r in ("pretrain", "scratch") if self.model_section(r).get("prior") is None
                       and (r == "pretrain" or self.ks)]
            if lacking:
                raise ValueError(f"config decode.source: 'prior' decodes the brain models' diffusion prior, but "
                                 f"brain.{lacking[0]}.model.prior is not set (the models would be trained without one)")
        if d.get("img2img") and not self.want_latent:
            raise ValueError("config decode.img2img: img2img starts from the latent head's blurry reconstruction, "
                             f"but brain.heads is {self.brain['heads']!r}, without 'latent'")

    def validation_opt(self) -> str:
        """``--validation IMAGES:SEED`` of the training and ridge rules (config brain.validation)."""
        v = self.brain.get("validation") or {}
        return f"--validation {int(v['images'])}:{int(v.get('seed', 0))}" if v.get("images") else ""

    def infer_opts(self, method: str) -> str:
        """``--prior`` when decode reads the method's prior samples."""
        return "--prior" if self.config["decode"].get("source") == "prior" and self.has_prior(method) else ""

    def check_model_configs(self) -> None:
        """Real weights named in models.* must exist: one clear message before any job runs.

        Only the paths are checked (nothing is loaded); "sim" needs no check (shipped or trained here).
        """
        import importlib

        if self.captioner_trained:
            self.check_captioner_training()
        for kind, (module, name) in _MODEL_PARSERS.items():
            if kind == "captioner" and self.captioner_trained:
                continue
            if not self.uses_sim(kind):
                try:
                    getattr(importlib.import_module(module), name)(self.models[kind])
                except InputError as e:
                    raise ValueError(f"config models.{kind}: {e}") from None

    def check_captioner_training(self) -> None:
        """``models.captioner: {lm: DIR, train: {...}}``: the language model exists and ``train``
        holds only train-captioner options."""
        from ..decoders.captioner import check_lm_dir

        cap = self.models["captioner"]
        if "dir" in cap:
            raise ValueError("config models.captioner: either 'dir' (a mapper trained before) or 'train' (train it "
                             "here), not both; a config file merged over one that trains sets train: null")
        bad = sorted(set(cap) - {"lm", "train"})
        if bad or not cap.get("lm"):
            raise ValueError(f"config models.captioner: a caption decoder trained here takes 'lm' (the language "
                             f"model's folder) and 'train' (train-captioner options){f', not {bad}' if bad else ''}")
        if not isinstance(self.captioner_train, dict):
            raise ValueError(f"config models.captioner.train: a mapping of train-captioner options (e.g. "
                             f"{{steps: 20000}}), got {self.captioner_train!r}")
        bad = sorted(set(self.captioner_train) - set(CAPTIONER_TRAIN_KEYS))
        if bad:
            raise ValueError(f"config models.captioner.train: unknown option(s) {bad}; expected some of "
                             f"{list(CAPTIONER_TRAIN_KEYS)}")
        try:
            check_lm_dir(cap["lm"])
        except InputError as e:
            raise ValueError(f"config models.captioner.lm: {e}") from None

    def captioner_train_opts(self) -> str:
        """train-captioner's options of models.captioner.train (``--steps 20000 ...``)."""
        return " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
                        for k, v in (self.captioner_train or {}).items() if v is not None)

    def captioner_lm_arg(self) -> str:
        """The language model of the caption decoder trained here (shell-quoted), or ''."""
        return shlex.quote(str(self.models["captioner"]["lm"])) if self.captioner_trained else ""

    def captioner_input(self) -> list[str]:
        """Input of decode: the caption decoder trained here (its config.json), or nothing."""
        return [f"{self.captioner_dir}/config.json"] if self.captioner_trained else []

    def check_real_models(self) -> None:
        """On real NSD every model is real: nsd-sim's own models (``"sim"``, or a mapping naming
        ``sim``) were trained on simulated scenes, and the judge on them would score nothing real.
        An ``nsd_root`` that is an nsd-sim world written elsewhere (``simulate --out DIR``: the root
        is ``DIR/nsd``, with the simulator's ``DIR/sim_truth/manifest.json`` beside it) keeps its
        own models."""
        if self.simulated or (Path(self.nsd_root).parent / "sim_truth" / "manifest.json").is_file():
            return
        for kind in (*_DECODERS, "judge_clip"):
            if self.uses_sim(kind):
                raise ValueError(f"config models.{kind}: {self.models[kind]!r} is nsd-sim's own model (trained on "
                                 f"simulated scenes), but nsd_root is a real NSD root ({self.nsd_root}); name local "
                                 f"weights of a real model (config/nsd.yaml names each and where to download it)")

    def check_inputs(self) -> None:
        """On real NSD: each subject present, the image brick in NSD's layout, the caption files
        looking like COCO JSON, and the files the stages start from present (each subject's ROI and
        first beta file, the stimulus table). Feature-net weights files are checked without
        unpickling."""
        from ..data.layout import check_root
        from ..data.stimuli import check_nsd_root
        from ..weights_file import check_weights_file

        pre = self.config["preprocess"]
        try:
            if not self.simulated:
                check_nsd_root(self.nsd_root, self.config["subjects"])
                check_root(self.nsd_root, self.config["subjects"], roi=pre["roi"], fmt=pre["format"],
                           sessions=pre["sessions"], resolution=pre["resolution"], beta_version=pre["beta_version"])
        except InputError as e:
            raise ValueError(f"config nsd_root: {e}") from None
        for net, path in self.config["evaluate"]["feature_weights"].items():
            if path:
                try:
                    check_weights_file(path, f"evaluate.feature_weights.{net}")
                except InputError as e:
                    raise ValueError(f"config evaluate.feature_weights.{net}: {e}") from None

    def check_train_batches(self) -> None:
        """Each training regime's batch divides over its configured GPUs."""
        from ..brain.train import TrainConfig

        for regime in res.TRAIN_RULES:
            batch = (self.brain[regime].get("train") or {}).get("batch_size", TrainConfig.batch_size)
            try:
                res.check_batch(regime, batch, self.train_gpus(regime))
            except InputError as e:
                raise ValueError(f"config {e}") from None

    # ------------------------------------------------------------------------ data and models
    def nsd_ready(self, wildcards=None) -> list[str]:
        """Input function: the simulated dataset when nsd-sim is used; nothing to wait for with real NSD."""
        return [self.sim_manifest] if self.simulated else []

    def sim_overrides(self) -> str:
        """``--set KEY=VALUE`` options for ``braindecode-pkg simulate``: the configured subjects and
        config["sim"]["overrides"]."""
        return _sets("", {"subjects": self.config["subjects"], **self.config["sim"].get("overrides", {})})

    def stage_opts(self, section: str, **over) -> str:
        """``--key value`` options of a config section (``preprocess``), with ``over`` on top."""
        return " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
                        for k, v in {**self.config[section], **over}.items())

    @property
    def subjects_arg(self) -> str:
        return ",".join(str(s) for s in self.config["subjects"])

    @property
    def sessions_arg(self) -> str:
        return shlex.quote(self.config["preprocess"]["sessions"])

    def model_arg(self, kind: str) -> str:
        """The command-line value of a model config: 'sim' or its JSON (a caption decoder trained
        here: its folder under results and the language model)."""
        value = self.models[kind]
        if kind == "captioner" and self.captioner_trained:
            value = {"dir": self.captioner_dir, "lm": value["lm"]}
        return shlex.quote(value if isinstance(value, str) else json.dumps(value, sort_keys=True))

    def uses_sim(self, kind: str) -> bool:
        """Whether models.``kind`` names nsd-sim's own model, in either form (``"sim"`` or a mapping
        naming ``sim``: every stage resolves both the same way)."""
        return names_sim(self.models[kind])

    def trained_sim(self, kind: str) -> str | None:
        """The folder of sim model ``kind`` when this workflow trains it and the config uses it, else None."""
        return f"{self.sim_models}/{kind}" if self.train_sim and self.uses_sim(kind) else None

    def sim_model_file(self, kind: str) -> str:
        """The file a trained sim model's folder is known by (its rule's output)."""
        from ..sim.recipes.chain import MARKER

        return f"{self.sim_models}/{kind}/{MARKER[kind]}"

    def trained_sim_input(self, kind: str) -> list[str]:
        """Input: the trained sim model's marker file, or nothing (shipped or real weights)."""
        return [self.sim_model_file(kind)] if self.trained_sim(kind) else []

    def decoders_input(self) -> list[str]:
        """Input of decode: the models trained here that it reads (nsd-sim's, the caption decoder)."""
        return [f for k in _DECODERS for f in self.trained_sim_input(k)] + self.captioner_input()

    def sim_chain_clip_opt(self) -> str:
        """train-sim-models' decoders follow the sim CLIP's chain, or train in one stage on another CLIP."""
        return "" if self.uses_sim("clip") else f"--clip {self.model_arg('clip')}"

    def clip_input(self) -> list[str]:
        """What the embed stage reads besides the data: the sim CLIP trained here, or the shipped
        weights file (so that new shipped weights re-embed); real weights are checked at parse time."""
        if not self.uses_sim("clip"):
            return []
        if self.train_sim:
            return self.trained_sim_input("clip")
        from ..decoders.clip import SHIPPED_SIM_CLIP

        return [str(SHIPPED_SIM_CLIP / "open_clip_model.safetensors")]

    def sim_dir_opt(self, kind: str, flag: str | None = None) -> str:
        """``--sim-clip DIR``-style option pointing a stage at a sim model trained here (else empty)."""
        d = self.trained_sim(kind)
        flag = flag or f"--sim-{kind.replace('_', '-')}"
        return f"{flag} {shlex.quote(d)}" if d else ""

    def decoders_opts(self) -> str:
        """decode's model options: each decoder's config and the sim folders trained here."""
        sims = " ".join(o for o in (self.sim_dir_opt(k) for k in _DECODERS) if o)
        opts = f"--image-decoder {self.model_arg('image_decoder')} --captioner {self.model_arg('captioner')} " \
               f"--clip {self.model_arg('clip')}"
        return f"{opts} {sims}".strip()

    def latent_input(self) -> list[str]:
        return [self.latent] if self.want_latent else []

    def latent_opt(self, wildcards, input) -> str:
        return f"--latent {input.latent[0]}" if self.want_latent else ""

    # ------------------------------------------------------------------------ the brain model
    def prep_file(self, subject: str) -> str:
        return f"{self.results}/prep/subj{subject}.h5"

    def prep_args(self, subjects) -> str:
        """``--prep`` values ``N=FILE`` of the given subjects."""
        return " ".join(f"{int(s)}={self.prep_file(s)}" for s in subjects)

    def regime_sets(self, regime: str) -> str:
        """``--set SECTION.KEY=VALUE`` options of a regime's run config (adapt/scratch inherit pretrain's
        model and loss sections unless they give their own)."""
        sections = dict(self.brain[regime])
        if regime != "pretrain":
            for sec in ("model", "loss"):
                sections.setdefault(sec, self.brain["pretrain"].get(sec, {}))
            if regime == "adapt":
                sections.pop("model", None)  # the architecture comes from the pretrained model
        return " ".join(_sets(f"{sec}.", values or {}) for sec, values in sections.items() if values)

    def brain_methods(self) -> list[tuple[str, str]]:
        """(method, subject) pairs whose test-set brain embeddings the workflow produces."""
        pairs = [("pretrain", s) for s in self.pretrain_subjects] + [("ridge-all", s) for s in self.pretrain_subjects]
        for k in self.ks:
            pairs += [(f"{m}-k{k}", self.heldout) for m in ("adapt", "scratch", "ridge")]
        return pairs

    def model_file(self, method: str, subject: str) -> str:
        """The model folder's weights file a method's embeddings come from."""
        if method.startswith("ridge-"):
            return f"{self.brain_models}/{method}/subj{subject}/model.safetensors"
        return f"{self.brain_models}/{method}/model.safetensors"

    def method_model(self, wildcards) -> str:
        return self.model_file(wildcards.method, wildcards.subject)

    def brain_file(self, method: str, subject: str) -> str:
        return f"{self.results}/brain/{method}/subj{subject}.h5"

    # ------------------------------------------------------------------------ decode and evaluate
    def decode_methods(self) -> list[tuple[str, str]]:
        """(method, subject) pairs decoded and scored: the brain methods and, per subject, the true
        embeddings (the decoders' ceiling)."""
        return self.brain_methods() + [("true_embedding", s) for s in self.subjects]

    def methods_of(self, subject: str) -> list[str]:
        """The methods decoded and scored for one subject."""
        return [m for m, s in self.decode_methods() if s == subject]

    def method_groups(self) -> dict[str, tuple[str, list[str]]]:
        """{job name: (subject, [methods])}: each subject's methods in near-equal groups of <= GROUP."""
        out = {}
        for s in self.subjects:
            ms = self.methods_of(s)
            k = -(-len(ms) // GROUP)
            for i in range(k):
                out[f"subj{s}" + (f"_{i + 1}" if k > 1 else "")] = (s, ms[i::k])
        return out

    def decode_out(self, method: str, subject: str) -> str:
        return f"{self.decode_dir}/{method}/subj{subject}"

    def decode_sets(self) -> str:
        """``--set KEY=VALUE`` options of the decode stage (config section decode)."""
        return _sets("", self.config["decode"])

    def part_file(self, method: str, subject: str) -> str:
        return f"{self.eval_dir}/parts/{method}/subj{subject}.h5"

    def eval_parts(self) -> list[str]:
        """Every part file collected into metrics.tsv (the oracle's on nsd-sim)."""
        parts = [self.part_file(m, s) for m, s in self.decode_methods()]
        if self.simulated:
            parts += [self.part_file("oracle", s) for s in self.subjects]
        return parts

    def truth_opt(self, subject: str) -> str:
        return f"--truth {self.sim_truth}/subj{subject}.h5" if self.simulated else ""

    def feature_weights_arg(self) -> str:
        return shlex.quote(json.dumps({k: v for k, v in self.config["evaluate"]["feature_weights"].items() if v}))

    def check_evaluate(self) -> None:
        """The judge CLIP exists (real weights, or nsd-sim's: shipped, or trained here), and
        retrieval on tokens has tokens to retrieve on: the brain model predicts them and embed
        stores them. Each an :class:`InputError` naming the key."""
        from ..evaluate.judge import parse_judge_config

        if self.evaluate_config("retrieval_head") == "tokens":
            what = self.config["embed"]["what"]
            if what not in ("tokens", "both"):
                raise InputError(f"config evaluate.retrieval_head: tokens, but embed.what is {what!r}, which stores "
                                 f"no image tokens to retrieve among (use tokens or both)")
            if not self._predicts_tokens(self.clip_heads):
                raise InputError(f"config evaluate.retrieval_head: tokens, but brain.heads ({self.brain['heads']}) "
                                 f"predicts no tokens (add tokens)")
        judge = self.models["judge_clip"]
        if self.trained_sim("judge_clip") is None:  # a judge trained here exists once its rule ran
            try:
                parse_judge_config(judge)
            except InputError as e:
                raise InputError(f"config models.judge_clip: {e}") from None

    def evaluate_config(self, key: str):
        """A key of the config's evaluate section, with its default (config/config.yaml's)."""
        defaults = {"retrieval_head": "pooled", "image_protocol": {"base": None, "antialias": True}}
        return self.config["evaluate"].get(key, defaults.get(key))

    def _predicts_tokens(self, heads: str) -> bool:
        """Whether CLIP heads (``available`` = what embed stores) include the tokens."""
        names = heads.split(",")
        return "tokens" in names or ("available" in names and self.config["embed"]["what"] in ("tokens", "both"))

    def retrieval_head(self, method: str) -> str:
        """The head a method's retrieval is scored on: ``evaluate.retrieval_head``, except that ridge
        methods fitted without tokens (``brain.ridge_heads``) are scored on pooled (the report marks
        their rows as not following the published protocol)."""
        want = self.evaluate_config("retrieval_head")
        if want == "tokens" and method.startswith("ridge-") and not self._predicts_tokens(self.ridge_heads):
            return "pooled"
        return want

    def retrieval_heads_opt(self, methods) -> str:
        """evaluate's ``--retrieval-head`` values, one per method."""
        return "--retrieval-head " + " ".join(self.retrieval_head(m) for m in methods)

    def image_protocol_arg(self) -> str:
        """evaluate's ``--image-protocol`` value (config ``evaluate.image_protocol``, JSON)."""
        return shlex.quote(json.dumps(self.evaluate_config("image_protocol"), sort_keys=True))

    def judge_opts(self) -> str:
        """evaluate's judge options: ``--judge-clip`` and, for nsd-sim's judge trained here,
        ``--sim-judge-clip DIR``."""
        return f"--judge-clip {self.model_arg('judge_clip')} {self.sim_dir_opt('judge_clip')}".strip()

    def judge_input(self) -> list[str]:
        """What evaluate reads of the judge: the nsd-sim judge trained here (its marker file) or
        the shipped judge's weights (so that new shipped weights score again); real weights are
        checked at parse time."""
        if self.trained_sim("judge_clip") is not None:
            return self.trained_sim_input("judge_clip")
        if not self.uses_sim("judge_clip"):
            return []
        from ..decoders import clip

        return [str(clip.SHIPPED_SIM_JUDGE / clip.LOCAL_DIR_SAFETENSORS)]

    def config_arg(self) -> str:
        """The whole config as JSON (the report's provenance)."""
        return shlex.quote(json.dumps(self.config, sort_keys=True))

    # ------------------------------------------------------------------------ scheduling
    @staticmethod
    def on_main_chain(methods) -> bool:
        """Whether the pretrained/adapted models' embeddings are among ``methods``."""
        return any(m == "pretrain" or m.startswith("adapt-") for m in methods)

    def infer_priority(self, wildcards) -> int:
        return PRIORITY["infer_main" if self.on_main_chain([wildcards.method]) else "infer"]

    def group_priority(self, stage: str, methods) -> int:
        """decode/evaluate job priority: higher for the groups on the main chain."""
        return PRIORITY[f"{stage}_main" if self.on_main_chain(methods) else stage]

    # ------------------------------------------------------------------------ job resources
    # Job resources from config["resources"] (resources.py), per rule. The threads of a job are its
    # configured cpus; mem_mb, runtime (minutes), gpu and slurm_partition are what a cluster
    # executor (workflow/profiles/slurm) asks for. Locally only the threads matter.
    def _rule_res(self, rule: str) -> dict:
        try:
            return res.rule_resources(self.config["resources"], rule)
        except InputError as e:
            raise ValueError(f"config {e}") from None

    def threads(self, rule: str) -> int:
        return int(self._rule_res(rule)["cpus"])

    def resources(self, rule: str) -> dict:
        return res.snakemake_resources(self._rule_res(rule))

    def train_gpus(self, regime: str) -> int:
        return int(self._rule_res(regime)["gpus"])

    def device_opt(self, rule: str) -> str:
        """``--device cuda`` for a stage whose jobs are given a GPU (resources), else nothing: the
        CPU path is the default of every stage."""
        return "--device cuda" if int(self._rule_res(rule)["gpus"]) > 0 else ""

    def train_launcher(self, wildcards, resources) -> str:
        """Params function of a training rule: ``python -m braindecode_pkg``, or ``accelerate launch``
        on one process per GPU when the job has more than one (its gpu resource: the config's, or
        what --set-resources gives)."""
        return res.launcher(self.python, int(resources.gpu))

    def train_threads(self, wildcards, threads, resources) -> int:
        """Params function: torch threads of each training process (the job's threads, after --cores
        and --set-threads, shared by its processes)."""
        return res.threads_per_process(threads, int(resources.gpu))

    # ------------------------------------------------------------------------ targets
    def all_targets(self) -> list[str]:
        """What ``rule all`` asks for."""
        return ([self.prep_file(s) for s in self.subjects] + [self.embed]
                + [self.brain_file(m, s) for m, s in self.brain_methods()]
                + [f"{self.eval_dir}/metrics.tsv", f"{self.results}/report/index.html"])
