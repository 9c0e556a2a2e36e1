"""The chain of training runs behind nsd-sim's shipped models (``braindecode-pkg train-sim-models``).

Only the planning is tested here (which stages, in which order, with which command lines); the
workflow test runs the whole chain at tiny scale (``test_sim_models_trained_by_the_workflow``)."""

from __future__ import annotations

import subprocess

import pytest

from braindecode_pkg import cli
from braindecode_pkg.errors import InputError
from braindecode_pkg.sim.recipes import chain as sim_chain


def _names(todo):
    return [s.name for s, _ in todo]


def _train(folder, kind):
    folder.mkdir(parents=True)
    (folder / sim_chain.MARKER[kind]).write_text("{}")


@pytest.mark.parametrize("scale", sim_chain.SCALES)
def test_every_stage_is_a_valid_command_run_after_what_it_starts_from(tmp_path, scale):
    todo = sim_chain.plan(tmp_path / "out", scale=scale, threads=3)
    assert _names(todo) == ["clip-1", "clip-2", "clip", *(f"image_decoder-{i}" for i in range(1, 9)), "image_decoder",
                            "captioner", "judge_clip-1", "judge_clip-2", "judge_clip"]
    seen = set()
    parser = cli.build_parser()
    for stage, argv in todo:
        assert set(stage.needs) <= seen, stage.name
        seen.add(stage.name)
        args = parser.parse_args(argv)  # a typo in a flag would exit here
        assert args.threads == 3 and args.workers == 3
        assert args.preset.startswith("tiny" if scale == "tiny" else "default")
    out = tmp_path / "out"
    by = {s.name: argv for s, argv in todo}
    assert by["clip"][by["clip"].index("--init") + 1] == str(out / "stages/clip-2")
    assert by["clip"][by["clip"].index("--out") + 1] == str(out / "clip")
    assert by["image_decoder-2"][by["image_decoder-2"].index("--sim-clip") + 1] == str(out / "stages/clip-2")
    assert by["image_decoder"][by["image_decoder"].index("--init") + 1] == str(out / "stages/image_decoder-8")
    assert by["captioner"][by["captioner"].index("--sim-clip") + 1] == str(out / "clip")
    # the recipes' step counts are the default scale's; tiny keeps its presets' own
    assert ("--steps" in by["captioner"]) == (scale == "default")
    # the judge: the CLIP's own recipe, stage for stage, from its own seed (scenes, order, start)
    for a, b in (("clip-1", "judge_clip-1"), ("clip-2", "judge_clip-2"), ("clip", "judge_clip")):
        ja, jb = parser.parse_args(by[a]), parser.parse_args(by[b])
        assert ja.seed == 0 and jb.seed == sim_chain.JUDGE_SEED == 1
        same = {k for k in vars(ja) if k not in ("seed", "init", "out", "argv")}
        assert {k: vars(ja)[k] for k in same} == {k: vars(jb)[k] for k in same}, b
    assert by["judge_clip"][by["judge_clip"].index("--init") + 1] == str(out / "stages/judge_clip-2")
    assert by["judge_clip"][by["judge_clip"].index("--out") + 1] == str(out / "judge_clip")


def test_a_target_needs_only_its_stages_and_finished_ones_are_skipped(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    assert _names(sim_chain.plan(out, work, ["captioner"])) == ["clip-1", "clip-2", "clip", "captioner"]
    _train(work / "clip-1", "clip")
    _train(work / "clip-2", "clip")
    (out / "clip").mkdir(parents=True)  # a folder without its marker (an interrupted run) is not done
    assert _names(sim_chain.plan(out, work, ["captioner"])) == ["clip", "captioner"]
    _train(work / "image_decoder-3", "image_decoder")
    (out / "clip" / sim_chain.MARKER["clip"]).write_text("{}")
    assert _names(sim_chain.plan(out, work, ["image_decoder", "captioner"])) == [
        *(f"image_decoder-{i}" for i in range(4, 9)), "image_decoder", "captioner"]
    _train(out / "captioner", "captioner")
    assert _names(sim_chain.plan(out, work, ["captioner"])) == []


def test_another_clip_trains_each_decoder_in_one_stage_on_it(tmp_path):
    clip = '{"arch": "ViT-B-32", "pretrained": "/w/b32.bin"}'
    todo = sim_chain.plan(tmp_path, clip=clip)
    assert _names(todo) == ["image_decoder", "captioner"]
    for _, argv in todo:
        assert argv[argv.index("--clip") + 1] == clip and "--init" not in argv and "--sim-clip" not in argv
    with pytest.raises(InputError, match="'clip'.*ViT-B-32.*not trained here"):
        sim_chain.plan(tmp_path, targets=["clip"], clip=clip)
    with pytest.raises(InputError, match="'vae'"):
        sim_chain.plan(tmp_path, targets=["vae"])
    with pytest.raises(InputError, match="scale 'huge'"):
        sim_chain.stages("huge")


def test_a_failing_stage_stops_the_chain_naming_it(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run(cmd):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0 if len(calls) < 2 else 3)

    monkeypatch.setattr(sim_chain.subprocess, "run", fake_run)
    rc = cli.main(["train-sim-models", "--out", str(tmp_path), "--only", "clip", "--scale", "tiny", "--quiet"])
    assert rc == 3 and len(calls) == 2
    assert calls[1][1:4] == ["-m", "braindecode_pkg", "train-clip"] and calls[1][-1] == "--quiet"
    err = capsys.readouterr().err
    assert "stage clip-2 failed (exit 3)" in err and "rerun to resume" in err
    calls.clear()
    assert cli.main(["train-sim-models", "--out", str(tmp_path), "--dry-run"]) == 0 and calls == []
    out = capsys.readouterr().out
    assert "[13/16] captioner: braindecode-pkg train-captioner" in out
    assert "[16/16] judge_clip: braindecode-pkg train-clip --preset default-attr --seed 1" in out


def _manifest(scale="tiny"):
    """A consistent manifest of the chain: each stage's weights hash is its name, each fine-tune
    started from its parent's, each decoder and the captioner read their CLIP stage's."""
    entries = []
    for s in sim_chain.stages(scale):
        e = {"stage": s.name, "kind": s.kind}
        parent, read = (sim_chain._arg(s, f) for f in ("--init", "--sim-clip"))
        if s.kind == "clip":
            e.update(weights_sha256=f"w:{s.name}", init_sha256=parent and f"w:{parent}")
        if s.kind == "image_decoder":
            e.update(unet_sha256=f"u:{s.name}", init_unet_sha256=parent and f"u:{parent}")
        if read:
            e.update(clip_stage=read, clip_sha256=f"w:{read}")
        entries.append(e)
    return entries


def test_lineage_errors_name_the_stage_that_breaks_the_chain():
    good = _manifest()
    assert sim_chain.lineage_errors(good, "tiny") == []
    assert sim_chain.lineage_errors(good, "default") == []  # the same chain at both scales
    bad = _manifest()
    by = {e["stage"]: e for e in bad}
    by["image_decoder-5"]["init_unet_sha256"] = "u:image_decoder-3"  # skipped a stage
    by["clip"]["init_sha256"] = None  # trained from scratch
    by["captioner"]["clip_sha256"] = "w:clip-2"  # read another CLIP than recorded
    by["image_decoder-2"]["clip_stage"] = "clip"
    assert sim_chain.lineage_errors(bad, "tiny") == [
        "clip did not start from clip-2's weights",
        "image_decoder-2 is recorded on CLIP stage clip, the chain's is clip-2",
        "image_decoder-5 did not start from image_decoder-4's UNet",
        "captioner read a CLIP other than clip's weights"]
    missing = [e for e in good if e["stage"] != "image_decoder-7"]
    assert "expected" in sim_chain.lineage_errors(missing, "tiny")[0]
    # a manifest of some final models holds exactly the stages they need (no judge, say)
    no_judge = [e for e in good if not e["stage"].startswith("judge_clip")]
    assert sim_chain.lineage_errors(no_judge, "tiny") == []
    only_captioner = [e for e in good if e["stage"] in ("clip-1", "clip-2", "clip", "captioner")]
    assert sim_chain.lineage_errors(only_captioner, "tiny") == []
    assert "expected" in sim_chain.lineage_errors([e for e in only_captioner if e["stage"] != "clip-2"], "tiny")[0]
    assert "expected" in sim_chain.lineage_errors([], "tiny")[0]


def test_record_reads_what_the_trainer_wrote(tmp_path):
    import json

    from braindecode_pkg.io import sha256_file

    chain = {s.name: s for s in sim_chain.stages("tiny")}
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "open_clip_model.safetensors").write_bytes(b"clip weights")
    (clip / "open_clip_config.json").write_text(json.dumps({"braindecode": {
        "command": "braindecode-pkg train-clip ...", "steps_run": 7, "seconds": {"total": 90.0},
        "init": {"weights_sha256": "abc"}, "heldout": {"image_to_caption_top1": 0.5, "n_heldout": 9, "ok": True}}}))
    e = sim_chain.record(chain["clip"], clip)
    assert e == {"stage": "clip", "kind": "clip", "command": "braindecode-pkg train-clip ...", "steps_run": 7,
                 "minutes": 1.5, "weights_sha256": sha256_file(clip / "open_clip_model.safetensors"),
                 "init_sha256": "abc", "heldout": {"image_to_caption_top1": 0.5, "n_heldout": 9}}
    dec = tmp_path / "dec"
    for part in ("unet", "vae"):
        (dec / part).mkdir(parents=True)
        (dec / part / "diffusion_pytorch_model.safetensors").write_bytes(part.encode())
    (dec / "braindecode.json").write_text(json.dumps({
        "command": "c", "steps_run": {"vae": 0, "unet": 3}, "seconds": {"total": 6.0},
        "init": {"unet_sha256": "u0"}, "clip": {"weights": str(clip / "open_clip_model.safetensors")},
        "heldout": {"two_way_generated": 0.9}}))
    e = sim_chain.record(chain["image_decoder"], dec)
    assert (e["init_unet_sha256"], e["clip_stage"], e["minutes"]) == ("u0", "clip", 0.1)
    assert e["clip_sha256"] == sha256_file(clip / "open_clip_model.safetensors")
    assert e["unet_sha256"] == sha256_file(dec / "unet/diffusion_pytorch_model.safetensors")
    cap = tmp_path / "cap"
    cap.mkdir()
    (cap / "model.safetensors").write_bytes(b"mapper")
    (cap / "config.json").write_text(json.dumps({"clip": {"weights_sha256": "cs"}, "braindecode": {
        "command": "c", "seconds": {}, "heldout": {"loss": 0.4, "examples": ["a"],
                                                   "attributes": {"shape": 0.8, "n": 10}}}}))
    e = sim_chain.record(chain["captioner"], cap)
    assert e["heldout"] == {"loss": 0.4, "shape": 0.8, "n": 10} and e["clip_sha256"] == "cs"
    assert e["minutes"] is None and e["mapper_sha256"] == sha256_file(cap / "model.safetensors")
