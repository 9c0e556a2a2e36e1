"""The chain of training runs behind nsd-sim's shipped models (``braindecode-pkg train-sim-models``).

Only the planning is tested here (which stages, in which order, with which command lines); the
workflow test runs the whole chain at tiny scale (``test_sim_models_trained_by_the_workflow``)."""

from __future__ import annotations

import subprocess

import pytest

from braindecode_pkg import cli
from braindecode_pkg.errors import InputError
from braindecode_pkg.models import sim_chain


def _names(todo):
    return [s.name for s, _ in todo]


def _train(folder, kind):
    folder.mkdir(parents=True)
    (folder / sim_chain.MARKER[kind]).write_text("{}")


@pytest.mark.parametrize("scale", sim_chain.SCALES)
def test_every_stage_is_a_valid_command_run_after_what_it_starts_from(tmp_path, scale):
    todo = sim_chain.plan(tmp_path / "out", scale=scale, threads=3)
    assert _names(todo) == ["clip-1", "clip-2", "clip", *(f"image_decoder-{i}" for i in range(1, 9)), "image_decoder",
                            "captioner"]
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
    assert "[13/13] captioner: braindecode-pkg train-captioner" in capsys.readouterr().out
