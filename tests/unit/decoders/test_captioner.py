"""The caption decoder: tokenizer, save/load round trips, config errors, the attribute score, the recipe.

Tiny models only (a 1-layer 32-wide GPT-2, a 16-d random CLIP), so the file runs in well under a
minute and never touches the network.
"""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from braindecode_pkg.errors import InputError  # noqa: E402
from braindecode_pkg.decoders import captioner as mcap  # noqa: E402
from braindecode_pkg.sim.recipes import captioner as tcap  # noqa: E402
from braindecode_pkg.sim.recipes import clip as train_clip  # noqa: E402

CLIP_DIM = 24  # distinct from the LM width (32) and the prefix length (3)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def sim_captions():
    """(train captions, held-out captions) of two different scene streams."""
    _, a = train_clip.draw_scenes(3, 1, 60, 5)
    _, b = train_clip.draw_scenes(3, 2, 20, 5)
    return [c for cs in a for c in cs], [c for cs in b for c in cs]


@pytest.fixture(scope="module")
def tokenizer(sim_captions):
    return tcap.build_tokenizer(sim_captions[0], vocab_size=600)


def _captioner(tokenizer, kind="mlp", seed=0):
    torch.manual_seed(seed)
    lm = tcap.build_lm(tokenizer, tcap.TINY_LM_CFG).eval()
    mapper = mcap.Mapper(CLIP_DIM, 32, prefix_length=3, kind=kind, n_layers=1, n_heads=2, clip_length=2).eval()
    return mcap.Captioner(mapper, lm, tokenizer, meta={"clip": {"name": "test", "embed_dim": CLIP_DIM}})


def _embeds(n=4, seed=1):
    return np.random.default_rng(seed).normal(size=(n, CLIP_DIM)).astype(np.float32)


# ------------------------------------------------------------------------------ tokenizer
def test_tokenizer_round_trip_on_sim_captions(tokenizer, sim_captions, tmp_path):
    from transformers import AutoTokenizer

    held = sim_captions[1]
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in held]
    assert [tokenizer.decode(i) for i in ids] == held  # byte-level: exact, captions never seen
    assert np.mean([len(i) for i in ids]) < 1.3 * np.mean([len(c.split()) for c in held])  # words are tokens
    assert tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)
    assert len(tokenizer) <= 600
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert [again(c, add_special_tokens=False)["input_ids"] for c in held] == ids
    assert (again.bos_token_id, again.eos_token_id, again.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    # trained deterministically
    twin = tcap.build_tokenizer(sim_captions[0], vocab_size=600)
    assert twin.get_vocab() == tokenizer.get_vocab()


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_save_load_round_trip(tokenizer, tmp_path, kind, no_network):
    cap = _captioner(tokenizer, kind)
    x = _embeds()
    ids, mask = cap.encode_captions(["A red circle on the sand.", "Two objects: a blue star and a ring."])
    with torch.inference_mode():
        want_logits = cap.logits(x[:2], ids, mask).numpy()
    want = {b: cap.generate(x, max_new_tokens=12, num_beams=b) for b in (1, 3)}
    cap.save_pretrained(tmp_path / "cap", info={"note": "test"})
    assert sorted(p.name for p in (tmp_path / "cap").iterdir()) == ["config.json", "lm", "model.safetensors"]
    assert (tmp_path / "cap" / "lm" / "model.safetensors").is_file()
    assert not list((tmp_path / "cap").rglob("*.bin"))

    back = mcap.Captioner.load({"dir": str(tmp_path / "cap")})
    assert back.lm.__class__.__name__ == "GPT2LMHeadModel"
    with torch.inference_mode():
        np.testing.assert_array_equal(back.logits(x[:2], ids, mask).numpy(), want_logits)
    for b in (1, 3):
        got = back.generate(x, max_new_tokens=12, num_beams=b)
        assert got == want[b]
        assert got == back.generate(x, max_new_tokens=12, num_beams=b)  # deterministic
        assert len(got) == len(x) and all(isinstance(t, str) for t in got)
    # one at a time gives the same as batched
    assert [back.generate(x[i:i + 1], max_new_tokens=12)[0] for i in range(len(x))] == want[1]
    doc = json.loads((tmp_path / "cap" / "config.json").read_text())
    assert doc["mapper"]["kind"] == kind and doc["braindecode"] == {"note": "test"}
    assert doc["lm"]["hidden_size"] == 32 and doc["clip"]["embed_dim"] == CLIP_DIM
    # the same folder through the other config forms
    for spec in (str(tmp_path / "cap"), json.dumps({"dir": str(tmp_path / "cap")}),
                 str(tmp_path / "cap" / "config.json")):
        assert mcap.parse_captioner_config(spec).lm_dir == (tmp_path / "cap" / "lm").resolve()
    assert mcap.Captioner.load("sim", sim_dir=tmp_path / "cap").generate(x[:1], 12) == want[1][:1]


def test_logits_are_the_lm_continuing_the_prefix(tokenizer):
    cap = _captioner(tokenizer)
    x = _embeds(2)
    ids, mask = cap.encode_captions(["A red circle.", "A big green star on the grass."])
    assert ids[0, mask[0].sum() - 1] == tokenizer.eos_token_id
    with torch.inference_mode():
        logits = cap.logits(x, ids, mask)
        # greedy generation's first token is the argmax of the first logits
        first = cap.lm(inputs_embeds=cap.prefix(x)).logits[:, -1]
    torch.testing.assert_close(logits[:, 0], first, rtol=1e-5, atol=1e-5)
    loss = cap.loss(x, ids, mask).detach()
    # the same cross-entropy as GPT-2's own loss on the prefix and the tokens, with the prefix and
    # the padding left out of the labels (the model shifts them itself)
    with torch.inference_mode():
        pre = cap.prefix(x)
        full = torch.cat([pre, cap.lm.get_input_embeddings()(ids)], dim=1)
        labels = torch.cat([torch.full((2, pre.shape[1]), -100), ids.masked_fill(mask == 0, -100)], dim=1)
        ref = cap.lm(inputs_embeds=full, attention_mask=torch.cat([torch.ones(2, pre.shape[1], dtype=torch.long),
                                                                    mask], 1), labels=labels).loss
    assert loss.ndim == 0 and float(loss) == pytest.approx(float(ref), rel=1e-5)
    assert float(cap.loss(x[::-1].copy(), ids, mask).detach()) != pytest.approx(float(loss), rel=1e-4)  # reads the prefix
    # the norm of an embedding does not matter (it is normalised)
    assert cap.generate(3 * x, 8) == cap.generate(x, 8)


def test_wrong_embedding_width_is_an_input_error(tokenizer):
    cap = _captioner(tokenizer)
    with pytest.raises(InputError, match=rf"\(n, {CLIP_DIM}\)"):
        cap.generate(np.zeros((2, CLIP_DIM + 1), np.float32))
    with pytest.raises(InputError, match="NaN"):
        cap.generate(np.full((1, CLIP_DIM), np.nan, np.float32))
    with pytest.raises(InputError, match="at most 45"):  # 48 positions, 3 for the prefix
        cap.generate(_embeds(1), max_new_tokens=46)


# ---------------------------------------------------------------------------------- errors
def test_missing_directories_are_input_errors(tokenizer, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match=str(missing)):
        mcap.parse_captioner_config({"dir": str(missing)})
    with pytest.raises(InputError, match=str(missing)):
        mcap.Captioner.load(str(missing))
    with pytest.raises(InputError, match="captioner config 'sim'|nowhere"):
        mcap.parse_captioner_config("sim", sim_dir=missing)

    cap = _captioner(tokenizer)
    cap.save_pretrained(tmp_path / "mapper_only", with_lm=False)
    # a mapper without its language model names the model and where to obtain it
    with pytest.raises(InputError, match="models.captioner.lm") as e:
        mcap.parse_captioner_config(str(tmp_path / "mapper_only"))
    assert "nothing is downloaded" in str(e.value)
    gpt2 = tmp_path / "gpt2"
    with pytest.raises(InputError) as e:
        mcap.parse_captioner_config({"dir": str(tmp_path / "mapper_only"), "lm": str(gpt2)})
    assert str(gpt2) in str(e.value) and "openai-community/gpt2" in str(e.value)
    assert "huggingface-cli download" in str(e.value)
    # pickled weights are not read
    gpt2.mkdir()
    (gpt2 / "config.json").write_text("{}")
    (gpt2 / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(InputError, match="never unpickled"):
        mcap.parse_captioner_config({"dir": str(tmp_path / "mapper_only"), "lm": str(gpt2)})
    # a config that is not a captioner's
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(InputError, match="not a captioner config"):
        mcap.parse_captioner_config(str(tmp_path / "other"))
    with pytest.raises(InputError, match="unknown key"):
        mcap.parse_captioner_config({"dir": str(tmp_path / "mapper_only"), "gpt": "x"})


def test_an_lm_of_another_width_is_refused(tokenizer, tmp_path):
    cap = _captioner(tokenizer)
    cap.save_pretrained(tmp_path / "cap", with_lm=False)
    other = tcap.build_lm(tokenizer, dict(tcap.TINY_LM_CFG, n_embd=16))
    other.save_pretrained(tmp_path / "lm16")
    tokenizer.save_pretrained(tmp_path / "lm16")
    with pytest.raises(InputError, match="32-d prefixes"):
        mcap.Captioner.load({"dir": str(tmp_path / "cap"), "lm": str(tmp_path / "lm16")})


# ------------------------------------------------------------------------- attribute score
# ---------------------------------------------------------------------------------- recipe
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from braindecode_pkg.decoders import clip as mclip

    name = "bd-test-captioner-clip"
    cfg = dict(train_clip.TINY_MODEL_CFG, embed_dim=CLIP_DIM)
    mclip.register_arch(name, cfg)
    torch.manual_seed(0)
    model = mclip.create_clip_model(name)
    return mclip.save_local_dir(model, tmp_path_factory.mktemp("clip"), cfg)


def test_recipe_lowers_the_loss_and_writes_a_loadable_folder(tiny_clip, tmp_path, no_network):
    recipe = tcap.recipe_from(tcap.PRESETS["tiny"], steps=30, eval_every=10)
    kw = dict(clip={"local_dir": str(tiny_clip)}, seed=2, recipe=recipe, cache_dir=tmp_path / "cache",
              progress=False)
    s = tcap.train(tmp_path / "out", **kw)
    losses = s["losses"]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert s["n_train_images"] == 64 and s["n_train_captions"] == 320
    assert s["train_stream"] != s["heldout_stream"]
    cap = mcap.Captioner.load(tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "config.json").read_text())
    assert doc["braindecode"]["recipe"]["steps"] == 30 and doc["clip"]["embed_dim"] == CLIP_DIM
    out = cap.generate(_embeds(3), max_new_tokens=20)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert [p["step"] for p in s["curve"]] == [10, 20]
    # the recorded held-out figures are those of the saved weights, measured again here on the
    # held-out stream: the token cross-entropy of each scene's caption (+ eos) and the attributes
    # of the greedy captions
    from braindecode_pkg.decoders.clip import ClipEncoder
    from braindecode_pkg.sim.attributes import sim_attribute_scores

    held = tcap.sim_pairs(ClipEncoder.load({"local_dir": str(tiny_clip)}), 2, tcap._P_HELDOUT, 16, 1,
                          cache_dir=tmp_path / "cache")
    assert s["heldout"]["n_heldout"] == len(held["embeds"]) == 16
    ids, mask = cap.encode_captions([c[0] for c in held["captions"]])
    with torch.inference_mode():
        assert s["heldout"]["loss"] == pytest.approx(float(cap.loss(held["embeds"], ids, mask)), rel=1e-4)
    again = sim_attribute_scores(cap.generate(held["embeds"], max_new_tokens=recipe.max_caption_tokens,
                                                num_beams=recipe.eval_beams), held["attrs"])
    assert s["heldout"]["attributes"]["objects"] == again["objects"]
    assert s["heldout"]["attributes"]["colour"] == again["colour"]
    # seeded: a second run (rendered scenes now from the cache; no evaluation on the way) gives the same
    # weights
    again = tcap.train(None, **dict(kw, recipe=tcap.recipe_from(recipe, eval_every=0)))
    assert again["losses"] == losses
    assert again["heldout"]["loss"] == s["heldout"]["loss"]


def _embeddings_file(path, n=40, seed=0):
    """An embeddings file as the embed stage writes it (the datasets the captioner reads)."""
    import h5py

    attrs, caps = train_clip.draw_scenes(seed, 7, n, 5)
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, CLIP_DIM)).astype(np.float32)
    ncap = np.full(n, 5, np.int8)
    ncap[3] = 0  # an image without captions is skipped
    with h5py.File(path, "w") as f:
        f["nsd_id"] = np.arange(100, 100 + n, dtype=np.int64)
        f["image_pooled"] = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        f["n_captions"] = ncap
        f.create_dataset("captions", data=[[c if ncap[i] else "" for c in cs] for i, cs in enumerate(caps)],
                         dtype=h5py.string_dtype("utf-8"))
        f["done"] = np.ones(n, bool)
    return path


def test_recipe_on_an_embeddings_file_with_a_frozen_local_lm(tokenizer, tmp_path, no_network):
    torch.manual_seed(0)
    lm = tcap.build_lm(tokenizer, tcap.TINY_LM_CFG)
    lm.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    h5 = _embeddings_file(tmp_path / "clip.h5")
    train, held = tcap.h5_pairs(h5, exclude_ids=[100, 101, 102, 103, 104])
    assert list(held["nsd_id"]) == [100, 101, 102, 104] and 103 not in train["nsd_id"]
    recipe = tcap.recipe_from(tcap.PRESETS["gpt2"], steps=25, warmup=3, lr=3e-3, batch_size=8, prefix_length=3,
                              mapper_layers=1, eval_beams=1)
    with pytest.raises(InputError, match="--lm"):
        tcap.train(tmp_path / "x", pairs=h5, recipe=recipe)
    s = tcap.train(tmp_path / "cap", pairs=h5, lm=tmp_path / "gpt2", exclude_ids=[100, 101, 102, 103, 104],
                   recipe=recipe, progress=False)
    assert np.mean(s["losses"][-5:]) < np.mean(s["losses"][:5])
    assert s["n_train_images"] == 35 and s["heldout"]["n_heldout"] == 4
    # the language model was frozen: only the mapper is written, and the LM is named at load time
    assert sorted(p.name for p in (tmp_path / "cap").iterdir()) == ["config.json", "losses.json", "model.safetensors"]
    from safetensors.torch import load_file

    assert all(torch.equal(v, lm.state_dict()[k]) for k, v in load_file(tmp_path / "gpt2" / "model.safetensors").items())
    cap = mcap.Captioner.load({"dir": str(tmp_path / "cap"), "lm": str(tmp_path / "gpt2")})
    assert cap.mapper.config["kind"] == "transformer"
    assert len(cap.generate(held["embeds"], max_new_tokens=10, num_beams=2)) == 4


def test_time_budget_shortens_the_run(tiny_clip, tmp_path):
    recipe = tcap.recipe_from(tcap.PRESETS["tiny"], steps=100000, warmup=2)
    s = tcap.train(None, clip={"local_dir": str(tiny_clip)}, recipe=recipe, minutes=0.01, cache_dir=False,
                   progress=False)
    assert s["steps_run"] < 100000 and s["recipe"]["steps"] == s["steps_run"]


def test_cli_train_captioner(tiny_clip, tmp_path, capsys):
    from braindecode_pkg.cli import main

    out = tmp_path / "cap"
    rc = main(["train-captioner", "--clip", str(tiny_clip), "--out", str(out), "--preset", "tiny",
               "--steps", "3", "--seed", "1", "--cache", "", "--quiet"])
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    doc = json.loads((out / "config.json").read_text())
    assert doc["braindecode"]["command"].startswith("braindecode-pkg train-captioner")
    assert doc["braindecode"]["seed"] == 1
    # a missing CLIP / language model fails before any work, with status 2 and one line
    rc = main(["train-captioner", "--clip", str(tmp_path / "no_clip"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "no_clip" in capsys.readouterr().err
    rc = main(["train-captioner", "--pairs", str(tmp_path / "e.h5"), "--lm", str(tmp_path / "gpt2"),
               "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "gpt2" in err and "huggingface-cli" in err
    rc = main(["train-captioner", "--pairs", str(tmp_path / "e.h5"), "--lm", str(tmp_path / "gpt2"),
               "--n-train", "100", "--out", str(tmp_path / "x")])
    assert rc == 2 and "--n-train 100: only for nsd-sim scenes" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
