"""Image metrics: hand-computed cases, skimage's SSIM, torchvision's resize, feature-net loading.

Tiny images with distinct sides (13, 16, 17, 23 px); feature nets with random weights saved to
tmp files, AlexNet only in the default run (the other three nets are marked slow).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from braindecode_pkg.errors import InputError  # noqa: E402
from braindecode_pkg.evaluate import images as im  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def _rand_u8(n, side, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _solid(n, side, value):
    return np.full((n, side, side, 3), value, np.uint8)


# ------------------------------------------------------------------------------------- resize
@pytest.mark.parametrize("size", [7, 23])  # down and up from 13 px
def test_resize_is_torchvision_bilinear_on_float(size):
    from torchvision.transforms import InterpolationMode, Resize

    a = _rand_u8(2, 13, 0)
    ref = Resize(size, InterpolationMode.BILINEAR)(torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255)
    got = im.resize_float(a, size)
    assert got.shape == (2, 3, size, size)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    # base: two resizes, as MindEye2's 256 px tensors then Resize(425)
    torch.testing.assert_close(im.resize_float(a, size, base=17), Resize(size)(Resize(17)(
        torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [7, 23])
def test_resize_without_antialiasing_is_interpolate_without_it(size):
    """MindEye's chain (torchvision 0.16's tensor resize: no antialiasing): the plain bilinear
    ``interpolate``, twice with a base, and torchvision's ``Resize(antialias=False)``."""
    from torchvision.transforms import InterpolationMode, Resize

    a = _rand_u8(2, 13, 6)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255

    def plain(t, s):
        return torch.nn.functional.interpolate(t, size=(s, s), mode="bilinear", align_corners=False, antialias=False)

    got = im.resize_float(a, size, antialias=False)
    torch.testing.assert_close(got, plain(x, size), rtol=0, atol=0)
    torch.testing.assert_close(got, Resize((size, size), InterpolationMode.BILINEAR, antialias=False)(x),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(im.resize_float(a, size, base=9, antialias=False), plain(plain(x, 9), size),
                               rtol=0, atol=0)
    if size < 13:  # downsampling: antialiasing changes the result
        assert (im.resize_float(a, size) - got).abs().max() > 0.01


def _stripes(side):
    """1 px vertical stripes, black and white: detail finer than any smaller grid can hold."""
    a = np.zeros((1, side, side, 3), np.uint8)
    a[:, :, 1::2] = 255
    return a


def test_ssim_of_stripes_against_grey_follows_the_chain():
    """A flat grey reconstruction of a striped stimulus. Brought down to 20 px with antialiasing
    the stripes average to grey, so the two look alike (SSIM near 1); without antialiasing the
    bilinear samples fall between stripes at varying fractions and keep aliased stripes of full
    range (SSIM near 0). The named chains at NSD's 425 px: the default chain leaves the stimulus
    untouched (full-contrast stripes: SSIM about C2 / (0.25 + C2) = 0.0036), MindEye's goes
    through 256 px without antialiasing, whose aliased stripes have less local contrast, so the
    grey scores higher there, though still near 0."""
    t = _stripes(48)
    grey = np.full_like(t, 128)
    with_aa = im.ssim(grey, t, size=40, base=20, antialias=True)[0]
    without = im.ssim(grey, t, size=40, base=20, antialias=False)[0]
    assert with_aa > 0.8 and without < 0.05
    assert im.ssim(t, t, size=40, base=20, antialias=False)[0] == pytest.approx(1.0)
    t = _stripes(425)
    grey = np.full_like(t, 128)
    default = im.ssim(grey, t, size=425, base=im.DEFAULT_CHAIN.base, antialias=im.DEFAULT_CHAIN.antialias)[0]
    mindeye = im.ssim(grey, t, size=425, base=im.MINDEYE_CHAIN.base, antialias=im.MINDEYE_CHAIN.antialias)[0]
    c2 = 0.03 ** 2
    assert default == pytest.approx(c2 / (0.25 + c2) * (2 * (128 / 255) * 0.5 + 1e-4)
                                    / ((128 / 255) ** 2 + 0.25 + 1e-4), rel=1e-3)
    assert mindeye > 3 * default and mindeye < 0.05


def test_image_protocol_parses_the_config():
    assert im.ImageProtocol.parse({"base": 256, "antialias": False}) == im.MINDEYE_CHAIN
    assert im.ImageProtocol.parse('{"base": null, "antialias": true}') == im.DEFAULT_CHAIN
    assert im.MINDEYE_CHAIN.name == "MindEye" and im.DEFAULT_CHAIN.name == "default"
    assert im.MINDEYE_CHAIN.to_dict() == {"base": 256, "antialias": False}
    for bad, words in (({"base": 0, "antialias": True}, "base must be"), ({"base": 256, "antialias": "no"},
                                                                           "antialias must be"), ("[1]", "mapping")):
        with pytest.raises(InputError, match=words):
            im.ImageProtocol.parse(bad)


# ------------------------------------------------------------------------------------ pixcorr
def test_pixcorr_hand_values():
    # one pixel, so the flattened RGB is the pixel: (0, .2, .4) against (.2, 0, .4):
    # centred (-.2, 0, .2) and (0, -.2, .2): r = .04 / .08 = 0.5
    true = np.array([[[[0, 51, 102]]]], np.uint8)
    pred = np.array([[[[51, 0, 102]]]], np.uint8)
    np.testing.assert_allclose(im.pixcorr(pred, true, size=1), [0.5], atol=1e-7)
    a = _rand_u8(3, 16, 1)
    np.testing.assert_allclose(im.pixcorr(a, a, size=16), 1.0, atol=1e-12)
    np.testing.assert_allclose(im.pixcorr(255 - a, a, size=16), -1.0, atol=1e-12)
    assert np.isnan(im.pixcorr(_solid(1, 16, 9), a[:1], size=16)).all()  # undefined, as in MindEye2


def test_pixcorr_is_mindeye_corrcoef_after_resize():
    a, b = _rand_u8(3, 13, 2), _rand_u8(3, 13, 3)
    ra = im.resize_float(a, 17).reshape(3, -1).numpy()
    rb = im.resize_float(b, 17).reshape(3, -1).numpy()
    ref = [np.corrcoef(ra[i], rb[i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(im.pixcorr(b, a, size=17), ref, atol=1e-12)


# --------------------------------------------------------------------------------------- ssim
def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    from skimage.color import rgb2gray

    a, b = _rand_u8(3, 13, 4), _rand_u8(3, 13, 5)
    b[1] = np.clip(a[1].astype(int) + 40, 0, 255)  # one pair that is alike
    ga = rgb2gray(im.resize_float(a, 23).permute(0, 2, 3, 1).numpy().astype(np.float64))
    gb = rgb2gray(im.resize_float(b, 23).permute(0, 2, 3, 1).numpy().astype(np.float64))
    ref = [skm.structural_similarity(p, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=1.0) for p, t in zip(gb, ga)]
    got = im.ssim(b, a, size=23)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert got[1] > got[0] and got[1] > got[2]


def test_ssim_constant_images():
    c1 = 0.01 ** 2
    np.testing.assert_allclose(im.ssim(_solid(2, 16, 77), _solid(2, 16, 77), size=16), 1.0, atol=1e-12)
    # constant a = 0.2 against constant b = 0.4: no variance, S = (2ab + C1) / (a² + b² + C1)
    np.testing.assert_allclose(im.ssim(_solid(1, 16, 51), _solid(1, 16, 102), size=16),
                               (0.16 + c1) / (0.2 + c1), atol=1e-12)


def test_ssim_ramp_on_paper():
    # x = 20 + 10 j (grey, /255) and y = 1 - x along the columns. Inside the cropped region the
    # 11-tap window never leaves the image, so the local mean of a ramp is the ramp, its local
    # variance alpha² s² with s² = Σ w_k k² the (truncated, normalised) kernel's variance, and
    # the covariance -alpha² s²: S = (2xy + C1)(C2 - 2v) / ((x² + y² + C1)(2v + C2)).
    side, c1, c2 = 16, 1e-4, 9e-4
    j = np.arange(side)
    x_u8 = np.broadcast_to((20 + 10 * j)[None, :, None], (side, side, 3)).astype(np.uint8)
    y_u8 = 255 - x_u8
    k = np.arange(-5, 6)
    w = np.exp(-k ** 2 / (2 * 1.5 ** 2))
    w /= w.sum()
    v = (10 / 255) ** 2 * np.sum(w * k ** 2)
    x = (20 + 10 * j[5:side - 5]) / 255
    y = 1 - x
    s = (2 * x * y + c1) * (c2 - 2 * v) / ((x ** 2 + y ** 2 + c1) * (2 * v + c2))
    np.testing.assert_allclose(im.ssim(y_u8[None], x_u8[None], size=side), [s.mean()], atol=1e-12)


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="11 px"):
        im.ssim_grey(np.zeros((10, 12)), np.zeros((10, 12)))


# ------------------------------------------------------------------------------ two-way, distance
def test_two_way_hand_values():
    e = np.eye(5)[:3]  # 3 stimuli, 5 features: centred e_0 = (.8, -.2, -.2, -.2, -.2), ...
    pred = np.stack([e[0], e[2] + 0.5 * e[0], 2 * e[2] + 1])
    # item 0 is its own stimulus: r = 1 against -0.25 for the others, 2 wins of 2.
    # item 1, centred (.2, -.3, .7, -.3, -.3), has dot products .2, -.3, .7 with the centred
    # stimuli 0, 1, 2 (equal norms): its own (-.3) is the lowest, 0 wins.
    # item 2 is an affine copy of its own stimulus 2: r = 1 against -0.25, 2 wins.
    np.testing.assert_array_equal(im.two_way(pred, e), [1.0, 0.0, 1.0])
    # the comparison is strict: a prediction equally like every stimulus wins nothing
    np.testing.assert_array_equal(im.two_way(np.ones((3, 5)) + np.arange(5), np.tile(np.arange(5), (3, 1))), 0.0)


def test_two_way_is_mindeye_corrcoef_and_blocks_agree():
    rng = np.random.default_rng(6)
    true = rng.normal(size=(9, 4, 5))
    pred = true + rng.normal(scale=2.0, size=true.shape)
    got = im.two_way(pred, true)
    # MindEye2's two_way_identification(return_avg=False): r[i, j] = corr(true_i, pred_j)
    r = np.corrcoef(true.reshape(9, -1), pred.reshape(9, -1))[:9, 9:]
    np.testing.assert_array_equal(got, np.sum(r < np.diag(r), 0) / 8)
    np.testing.assert_array_equal(im.two_way(pred, true, block_elems=41), got)  # blocks of 2 rows
    from braindecode_pkg.sim.recipes import image_decoder as tid

    assert tid.two_way_identification(pred.reshape(9, -1), true.reshape(9, -1)) == pytest.approx(got.mean())


def test_two_way_errors():
    with pytest.raises(ValueError, match="at least 2"):
        im.two_way(np.ones((1, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="width"):
        im.two_way(np.ones((2, 3)), np.ones((2, 4)))


def test_correlation_distance():
    from scipy.spatial.distance import correlation

    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    np.testing.assert_allclose(im.correlation_distance(a, b), [correlation(u, v) for u, v in zip(a, b)],
                               atol=1e-12)
    np.testing.assert_allclose(im.correlation_distance(a, 3 * a + 1), 0.0, atol=1e-12)
    np.testing.assert_allclose(im.correlation_distance(-a, a), 2.0, atol=1e-12)


# ----------------------------------------------------------------------------------- CLIP
class _MeanColourEncoder:
    """Stands in for ClipEncoder: 'embeds' an image as its mean RGB and its side."""

    def __init__(self):
        self.sides = []

    def encode_images(self, images, what=("pooled",)):
        assert what == ("pooled",)
        x = np.asarray(images, np.float64)
        self.sides.append(x.shape[1])
        return {"pooled": np.concatenate([x.mean((1, 2)), np.full((len(x), 1), x.shape[1])], 1)}


def test_clip_features_and_clip_two_way():
    from braindecode_pkg.sim.recipes import image_decoder as tid

    enc = _MeanColourEncoder()
    a = _rand_u8(4, 13, 8)
    f = im.clip_features(enc, a, size=17)
    assert f.shape == (4, 4) and enc.sides == [17]
    assert (f[:, 3] == 17).all()
    g = im.clip_features(enc, a, size=None)
    assert enc.sides[-1] == 13 and (g[:, 3] == 13).all()
    # the images against their own features: every comparison won; against another image's
    # (rolled by one): MindEye's count with np.corrcoef, item by item
    assert tid.clip_two_way(enc, a, f, size=17) == 1.0
    other = np.roll(f, 1, axis=0)
    r = np.corrcoef(f, other)[:4, 4:]  # r[i, j] = corr(features of image i, true j)
    want = np.mean([np.sum(r[i] < r[i, i]) / 3 for i in range(4)])
    assert tid.clip_two_way(enc, a, other, size=17) == pytest.approx(want, abs=1e-12) and want < 1


# ------------------------------------------------------------------------------- feature nets
@pytest.fixture(scope="module")
def alexnet_sd():
    """A random AlexNet's state dict, without the classifier (unused, 235 MB)."""
    torch.manual_seed(0)
    net = torchvision.models.alexnet()
    return {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("classifier.")}


@pytest.fixture(scope="module")
def alexnet_files(alexnet_sd, tmp_path_factory):
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("alexnet")
    save_file(alexnet_sd, str(d / "alexnet.safetensors"))
    torch.save(alexnet_sd, d / "alexnet.pth")
    return d


@pytest.mark.parametrize("fname", ["alexnet.safetensors", "alexnet.pth"])
def test_alexnet_loads_and_gives_mindeye_layers(alexnet_files, alexnet_sd, fname):
    model = im.load_feature_net("alexnet", alexnet_files / fname)
    for k, v in model.state_dict().items():
        assert torch.equal(v, alexnet_sd[k]), k
    a = _rand_u8(3, 13, 9)
    feats = im.net_features("alexnet", model, a)
    # 256 px: conv1 (stride 4) 63, pool 31, conv2 31 → 192·31·31; pool 15, conv5 → 256·15·15
    assert feats["features.4"].shape == (3, 192 * 31 * 31)
    assert feats["features.11"].shape == (3, 256 * 15 * 15)
    # the same as torchvision's feature extractor on MindEye's preprocessing
    from torchvision.models.feature_extraction import create_feature_extractor
    from torchvision.transforms import InterpolationMode, Normalize, Resize

    ref_net = torchvision.models.alexnet()
    ref_net.load_state_dict(alexnet_sd, strict=False)
    ext = create_feature_extractor(ref_net.eval(), return_nodes=["features.4", "features.11"])
    x = Normalize(im.IMAGENET_MEAN, im.IMAGENET_STD)(
        Resize(256, InterpolationMode.BILINEAR)(torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255))
    with torch.no_grad():
        ref = ext(x)
    for node in ("features.4", "features.11"):
        np.testing.assert_allclose(feats[node], ref[node].flatten(1).numpy(), rtol=1e-5, atol=1e-5)


def test_feature_metrics_alexnet_only(alexnet_files):
    a = _rand_u8(4, 16, 10)
    out = im.feature_metrics(a, a, {"alexnet": alexnet_files / "alexnet.safetensors", "swav": None})
    assert list(out) == list(im.FEATURE_METRICS)
    for m in ("twoway_alexnet2", "twoway_alexnet5"):
        assert out[m].shape == (4,)
        np.testing.assert_array_equal(out[m], 1.0)
    assert out["twoway_inception"] is None and out["dist_effnet"] is None and out["dist_swav"] is None
    assert all(v is None for v in im.feature_metrics(a, a, {}).values())
    with pytest.raises(InputError, match="unknown feature nets.*alexnet, inception, effnet, swav"):
        im.feature_metrics(a, a, {"vgg": "x.pth"})


def test_feature_net_extra_heads_and_module_prefix_are_accepted(alexnet_sd, tmp_path):
    sd = {f"module.{k}": v for k, v in alexnet_sd.items()}
    sd["module.classifier.1.weight"] = torch.zeros(2, 3)  # a head no metric uses: ignored
    torch.save({"state_dict": sd, "epoch": torch.tensor(3)}, tmp_path / "ckpt.pth")
    model = im.load_feature_net("alexnet", tmp_path / "ckpt.pth")
    assert torch.equal(model.state_dict()["features.0.weight"], alexnet_sd["features.0.weight"])


def test_feature_net_errors_name_the_file(alexnet_sd, tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(InputError, match="nowhere.safetensors: weight file not found"):
        im.load_feature_net("alexnet", missing)
    with pytest.raises(InputError, match="unknown feature net 'vgg'"):
        im.load_feature_net("vgg", missing)
    short = {k: v for k, v in alexnet_sd.items() if k != "features.3.bias"}
    short["features.13.weight"] = torch.zeros(1)
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(InputError, match=r"short.pth: not alexnet.*missing 1 keys: features.3.bias.*"
                                         r"unexpected 1 keys: features.13.weight"):
        im.load_feature_net("alexnet", tmp_path / "short.pth")
    wrong = dict(alexnet_sd)
    wrong["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(InputError, match=r"wrong.pth: weights do not fit alexnet.*features.0.weight"):
        im.load_feature_net("alexnet", tmp_path / "wrong.pth")
    torch.save(torchvision.models.squeezenet1_1(), tmp_path / "pickled.pth")  # a whole module: never unpickled
    with pytest.raises(InputError, match="pickled.pth: feature-net weights file refused: its pickle holds objects"):
        im.load_feature_net("alexnet", tmp_path / "pickled.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="junk.safetensors: not a readable safetensors file"):
        im.load_feature_net("alexnet", tmp_path / "junk.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("name,width,full", [("inception", 2048, "AuxLogits.fc.weight"),
                                             ("effnet", 1280, "classifier.1.weight"),
                                             ("swav", 2048, "projection_head.0.weight")])
def test_heavy_feature_nets(name, width, full, tmp_path):
    """A random torchvision net's full state dict (with the heads no metric uses) round-trips."""
    torch.manual_seed(1)
    builder = {"inception": lambda: torchvision.models.inception_v3(aux_logits=True, init_weights=False),
               "effnet": torchvision.models.efficientnet_b1, "swav": torchvision.models.resnet50}[name]
    sd = builder().state_dict()
    if name == "swav":  # SwAV's checkpoint: DataParallel prefix, projection head and prototypes
        sd = {f"module.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
        sd["module.projection_head.0.weight"] = torch.zeros(4, 2048)
        sd["module.prototypes.weight"] = torch.zeros(3, 4)
    assert any(k.endswith(full) for k in sd)
    torch.save(sd, tmp_path / "w.pth")
    model = im.load_feature_net(name, tmp_path / "w.pth")
    a = _rand_u8(3, 13, 11)
    (node,) = im.FEATURE_NETS[name].nodes
    assert im.net_features(name, model, a)[node].shape == (3, width)
    out = im.feature_metrics(a, a, {name: tmp_path / "w.pth"})
    (metric,) = [m for m, _ in im.FEATURE_NETS[name].metrics]
    expect = 1.0 if metric.startswith("twoway") else 0.0
    np.testing.assert_allclose(out[metric], expect, atol=1e-6)
