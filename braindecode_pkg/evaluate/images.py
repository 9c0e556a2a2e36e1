"""Image metrics of reconstructions, per image, following MindEye / MindEye2's evaluation.

Every function takes uint8 images ``(n, H, W, 3)`` (or features ``(n, ...)``) of the
predictions and of the stimuli they should reproduce, row ``i`` against row ``i``, and returns
one value per image (``(n,)``), so that a caller can average and bootstrap them
(:mod:`.bootstrap`).

The protocol is that of MindEye2's ``src/final_evaluations.ipynb`` (MedARC-AI/MindEyeV2; MindEye1's
evaluation is the same), reproduced here with its constants:

``pixcorr``  images as float in [0, 1], resized to 425 × 425 (bilinear: what
             ``torchvision.transforms.Resize(425, BILINEAR)`` does to a float tensor; antialiased
             or not, see "The image chain" below), flattened RGB, Pearson r of prediction and
             stimulus (``np.corrcoef``). ``nan`` where an image is constant (MindEye2 lets the
             nan through too).
``ssim``     the same resize, grey with skimage's ``rgb2gray`` weights (0.2125, 0.7154, 0.0721),
             then ``skimage.metrics.structural_similarity(pred, true, gaussian_weights=True,
             sigma=1.5, use_sample_covariance=False, data_range=1.0)``: Gaussian windows of
             sigma 1.5 truncated at 3.5 sigma (11 taps, ``reflect`` borders), K1 = 0.01,
             K2 = 0.03, population (co)variances, the mean of the SSIM map without the 5 pixels
             of each border. Implemented with :func:`scipy.ndimage.gaussian_filter` (the tests
             compare it with skimage). Computed in float64; MindEye2 fed float32 arrays, which
             makes skimage compute in float32 (differences of order 1e-6).
``two_way``  two-way identification: for prediction ``i``, the fraction of the other stimuli
             ``j`` with ``corr(pred_i, true_j) < corr(pred_i, true_i)`` (Pearson correlation
             of flattened features; chance 0.5). A prediction or stimulus with constant
             features has nan correlations, which never count as a success (as in MindEye2).
``correlation_distance``  ``1 - r`` of prediction and stimulus features
             (``scipy.spatial.distance.correlation``; MindEye's EfficientNet-B1 and SwAV
             metrics, lower is better).

Feature networks (:data:`FEATURE_NETS`), each run on float images resized (bilinear) to
``size`` × ``size`` and normalised with the ImageNet mean and std, as MindEye2
does (``Resize(size, BILINEAR)`` + ``Normalize`` on float tensors, features from
``create_feature_extractor``; here forward hooks give the same tensors):

=============  ===================================  ======  ====================================
net            architecture (torchvision)           size    metrics (node)
=============  ===================================  ======  ====================================
``alexnet``    ``alexnet``                          256     ``twoway_alexnet2`` (``features.4``),
                                                            ``twoway_alexnet5`` (``features.11``)
``inception``  ``inception_v3``, ``aux_logits``     342     ``twoway_inception`` (``avgpool``)
               off, ``transform_input`` on (as
               torchvision builds it for its
               ImageNet weights)
``effnet``     ``efficientnet_b1``                  255     ``dist_effnet`` (``avgpool``)
``swav``       ``resnet50`` with SwAV weights       224     ``dist_swav`` (``avgpool``)
=============  ===================================  ======  ====================================

Their weights are never downloaded: :func:`load_feature_net` reads a state dict from a local
file (``.safetensors``, or a ``torch.save`` file read with ``weights_only=True``), e.g.
torchvision's ``AlexNet_Weights.IMAGENET1K_V1``, ``Inception_V3_Weights.IMAGENET1K_V1``,
``EfficientNet_B1_Weights.IMAGENET1K_V2`` (MindEye2's ``DEFAULT``\\ s) and SwAV's
``swav_800ep_pretrain.pth.tar`` (what ``torch.hub.load('facebookresearch/swav:main',
'resnet50')`` puts in a torchvision ResNet-50). :func:`feature_metrics` gives ``None`` for the
metrics of every net without a weight file; report those as unavailable, never as a number.

The image chain (:class:`ImageProtocol`, config ``evaluate.image_protocol``): MindEye and
MindEye2 bring stimuli and reconstructions to 256 × 256 first (``transforms.Resize((256, 256))``
of float tensors; their stored evaluation tensors are 256 px), then to each metric's size, and
torchvision 0.16, which they ran, did not antialias the resize of a tensor (its ``antialias``
default, ``"warn"``, meant off for tensors until 0.17 turned it on): ``ImageProtocol(base=256,
antialias=False)`` (:data:`MINDEYE_CHAIN`) is that chain. ``ImageProtocol(base=None,
antialias=True)`` (:data:`DEFAULT_CHAIN`) resizes once, antialiased (today's torchvision). Without
antialiasing a downsampling keeps fine detail as aliasing (NSD's 425 px stimuli to 256 px), which
moves PixCorr and SSIM; every resize of the chain (``base``, 425, each net's size) follows it.
Images are assumed square; others are resized to squares (``Resize(int)`` would keep the aspect
ratio). CLIP two-way identification uses the judge CLIP's own preprocessing from uint8
(:func:`clip_features`), whatever the chain: ``two_way(clip_features(judge, pred),
clip_features(judge, true))``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import InputError

#: ImageNet normalisation of every feature net
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: skimage.color.rgb2gray's weights (ITU-R BT.709 luma)
GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)
#: images per forward pass / per resize batch
BATCH = 32


@dataclasses.dataclass(frozen=True)
class ImageProtocol:
    """How images are brought to each metric's size (module docstring, "The image chain"):
    ``base`` a first resize to ``base`` × ``base`` (``None``: none), ``antialias`` for every resize."""

    base: int | None = None
    antialias: bool = True

    def __post_init__(self):
        if self.base is not None and (isinstance(self.base, bool) or int(self.base) < 1):
            raise InputError(f"image protocol: base must be a side in pixels or null, got {self.base!r}")
        if not isinstance(self.antialias, bool):
            raise InputError(f"image protocol: antialias must be true or false, got {self.antialias!r}")

    @classmethod
    def parse(cls, value) -> "ImageProtocol":
        """From a mapping ``{base, antialias}`` (config ``evaluate.image_protocol``), its JSON
        text, or an :class:`ImageProtocol`."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except ValueError as e:
                raise InputError(f"image protocol {value!r}: not JSON ({e})") from None
        if not isinstance(value, dict):
            raise InputError(f"image protocol: expected a mapping {{base, antialias}}, got {value!r}")
        unknown = sorted(set(value) - {"base", "antialias"})
        if unknown:
            raise InputError(f"image protocol: unknown key(s) {unknown}; expected base, antialias")
        base = value.get("base")
        return cls(None if base is None else int(base), value.get("antialias", True))

    def to_dict(self) -> dict:
        return {"base": self.base, "antialias": self.antialias}

    @property
    def name(self) -> str:
        """``"MindEye"`` (256 px first, no antialiasing), ``"default"`` (one antialiased resize),
        or the values."""
        if self == MINDEYE_CHAIN:
            return "MindEye"
        if self == DEFAULT_CHAIN:
            return "default"
        return f"base {self.base}, antialias {'on' if self.antialias else 'off'}"


#: MindEye / MindEye2's chain: 256 px first, then each size, never antialiased (torchvision 0.16)
MINDEYE_CHAIN = ImageProtocol(256, False)
#: one antialiased resize to each size
DEFAULT_CHAIN = ImageProtocol(None, True)


# ----------------------------------------------------------------------------- input handling
def _check_pair(pred, true, what="images"):
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape[0] != true.shape[0]:
        raise ValueError(f"{pred.shape[0]} predicted {what} for {true.shape[0]} true ones")
    return pred, true


def _check_u8(images, name):
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 images (n, H, W, 3), got {a.dtype} {a.shape}")
    return a


def resize_float(images_u8, size: int, base: int | None = None, *, antialias: bool = True):
    """``(n, 3, size, size)`` float32 torch tensor of uint8 ``(n, H, W, 3)`` images in [0, 1].

    Bilinear (``torch.nn.functional.interpolate(..., mode="bilinear", antialias=antialias)``:
    what torchvision's ``Resize(size, BILINEAR)`` does to float tensors, antialiased as today's
    torchvision does, or not, as 0.16's did); a first resize to ``base`` × ``base`` when ``base``
    is given. No resize where the side already matches.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float().div_(255.0)
    for s in (base, size):
        if s is not None and tuple(x.shape[-2:]) != (int(s), int(s)):
            x = torch.nn.functional.interpolate(x, size=(int(s), int(s)), mode="bilinear",
                                                align_corners=False, antialias=bool(antialias))
    return x


def _batches(n, batch=BATCH):
    return range(0, n, batch)


# ----------------------------------------------------------------------------------- low level
def pixcorr(pred, true, size: int = 425, *, base: int | None = None, antialias: bool = True) -> np.ndarray:
    """Pearson r of the flattened RGB of each prediction and its stimulus at ``size`` px, ``(n,)``."""
    pred, true = _check_pair(_check_u8(pred, "pred"), _check_u8(true, "true"))
    out = np.empty(len(pred))
    for a in _batches(len(pred)):
        p = resize_float(pred[a:a + BATCH], size, base, antialias=antialias).flatten(1).numpy().astype(np.float64)
        t = resize_float(true[a:a + BATCH], size, base, antialias=antialias).flatten(1).numpy().astype(np.float64)
        out[a:a + len(p)] = _rowwise_r(p, t)
    return out


def _rowwise_r(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    p = p - p.mean(1, keepdims=True)
    t = t - t.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("ij,ij->i", p, t) / np.sqrt(np.einsum("ij,ij->i", p, p) * np.einsum("ij,ij->i", t, t))


def grey(x: np.ndarray) -> np.ndarray:
    """skimage's ``rgb2gray`` of ``(..., 3)`` float images: 0.2125 R + 0.7154 G + 0.0721 B."""
    return np.asarray(x, np.float64) @ np.asarray(GREY_WEIGHTS)


def ssim(pred, true, size: int = 425, *, base: int | None = None, antialias: bool = True) -> np.ndarray:
    """Mean SSIM of the grey ``size`` px prediction and stimulus, ``(n,)`` (module docstring)."""
    pred, true = _check_pair(_check_u8(pred, "pred"), _check_u8(true, "true"))
    out = np.empty(len(pred))
    for a in _batches(len(pred)):
        p = grey(resize_float(pred[a:a + BATCH], size, base, antialias=antialias).permute(0, 2, 3, 1).numpy())
        t = grey(resize_float(true[a:a + BATCH], size, base, antialias=antialias).permute(0, 2, 3, 1).numpy())
        out[a:a + len(p)] = ssim_grey(p, t)
    return out


def ssim_grey(x: np.ndarray, y: np.ndarray, *, sigma: float = 1.5, truncate: float = 3.5,
              data_range: float = 1.0, K1: float = 0.01, K2: float = 0.03) -> np.ndarray:
    """SSIM of grey images ``(n, H, W)`` (or one ``(H, W)``), one value per image.

    What ``skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, data_range=data_range)`` computes: local means, variances and
    covariance under a Gaussian window (``gaussian_filter`` with ``truncate``, ``reflect``
    borders), ``S = (2 ux uy + C1)(2 vxy + C2) / ((ux² + uy² + C1)(vx + vy + C2))`` with
    ``C1 = (K1 R)²``, ``C2 = (K2 R)²``, averaged without ``r = int(truncate sigma + 0.5)``
    pixels at each border.
    """
    from scipy.ndimage import gaussian_filter

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images of shapes {x.shape} and {y.shape}")
    single = x.ndim == 2
    if single:
        x, y = x[None], y[None]
    r = int(truncate * sigma + 0.5)
    if min(x.shape[1:]) < 2 * r + 1:
        raise ValueError(f"images of {x.shape[1:]} px are smaller than the {2 * r + 1} px SSIM window")
    sig = (0.0, sigma, sigma)  # no smoothing across images

    def filt(a):
        return gaussian_filter(a, sig, mode="reflect", truncate=truncate)

    ux, uy = filt(x), filt(y)
    vx = filt(x * x) - ux * ux
    vy = filt(y * y) - uy * uy
    vxy = filt(x * y) - ux * uy
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    out = s[:, r:s.shape[1] - r, r:s.shape[2] - r].mean(axis=(1, 2), dtype=np.float64)
    return out[0] if single else out


def _standardised(x: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (float64), so that row dot products are Pearson r."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def _flat(x) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(len(x), -1)


def two_way(pred_feats, true_feats, *, block_elems: int = 1 << 24) -> np.ndarray:
    """MindEye's two-way identification per prediction, ``(n,)`` in [0, 1].

    ``out[i]`` = the fraction of ``j != i`` with ``corr(pred_i, true_j) < corr(pred_i, true_i)``
    (Pearson r of the flattened features). Computed in float64, in blocks of about
    ``block_elems`` numbers so that wide features (AlexNet layer 2: 184,512 per image) need no
    float64 copy of the whole set.
    """
    p, t = _check_pair(_flat(pred_feats), _flat(true_feats), "feature rows")
    n, d = p.shape
    if t.shape[1] != d:
        raise ValueError(f"predicted features of width {d}, true ones of width {t.shape[1]}")
    if n < 2:
        raise ValueError(f"two-way identification needs at least 2 items, got {n}")
    rows = max(1, int(block_elems) // max(1, d))
    wins = np.zeros(n, np.int64)
    for a in range(0, n, rows):
        pa = _standardised(p[a:a + rows])
        r = pa @ _standardised(t[a:a + rows]).T  # the diagonal from the same product as the rest
        diag = np.diag(r)[:, None]
        wins[a:a + rows] += (r < diag).sum(1)
        for b in range(0, n, rows):
            if b != a:
                wins[a:a + rows] += ((pa @ _standardised(t[b:b + rows]).T) < diag).sum(1)
    return wins / (n - 1)


def correlation_distance(pred_feats, true_feats) -> np.ndarray:
    """``1 - r`` of each prediction's and its stimulus' flattened features, ``(n,)``
    (``scipy.spatial.distance.correlation`` row by row)."""
    p, t = _check_pair(_flat(pred_feats), _flat(true_feats), "feature rows")
    if p.shape[1] != t.shape[1]:
        raise ValueError(f"predicted features of width {p.shape[1]}, true ones of width {t.shape[1]}")
    return 1.0 - _rowwise_r(p.astype(np.float64), t.astype(np.float64))


# ------------------------------------------------------------------------------- feature nets
@dataclasses.dataclass(frozen=True)
class FeatureNet:
    """One feature network: how to build it, feed it, and which of its outputs give which metric.

    ``metrics`` maps a metric name to ``(node, kind)``: ``node`` a module name whose output is
    the feature (flattened), ``kind`` ``"two_way"`` or ``"distance"``. ``drop`` names heads
    that no metric needs: they are replaced by ``Identity`` and their weights, if the file has
    them, are ignored, as are keys under ``ignore`` (parts of a checkpoint outside the
    torchvision architecture).
    """

    builder: str
    kwargs: tuple
    size: int
    metrics: tuple
    drop: tuple = ()
    ignore: tuple = ()

    def build(self):
        """The architecture without its dropped heads, its tensors allocated but not initialised
        (:func:`load_feature_net` fills every one of them)."""
        import torch
        import torchvision

        with torch.device("meta"):  # no time spent initialising weights that are overwritten
            model = getattr(torchvision.models, self.builder)(weights=None, **dict(self.kwargs))
        for name in self.drop:
            setattr(model, name, torch.nn.Identity())
        return model.to_empty(device="cpu").eval().requires_grad_(False)

    @property
    def nodes(self) -> tuple:
        return tuple(dict.fromkeys(node for _, (node, _k) in self.metrics))


FEATURE_NETS: dict[str, FeatureNet] = {
    "alexnet": FeatureNet(
        "alexnet", (), 256,
        (("twoway_alexnet2", ("features.4", "two_way")), ("twoway_alexnet5", ("features.11", "two_way"))),
        drop=("avgpool", "classifier")),
    "inception": FeatureNet(
        "inception_v3", (("aux_logits", False), ("transform_input", True), ("init_weights", False)), 342,
        (("twoway_inception", ("avgpool", "two_way")),),
        drop=("fc",), ignore=("AuxLogits.",)),
    "effnet": FeatureNet(
        "efficientnet_b1", (), 255, (("dist_effnet", ("avgpool", "distance")),), drop=("classifier",)),
    "swav": FeatureNet(
        "resnet50", (), 224, (("dist_swav", ("avgpool", "distance")),),
        drop=("fc",), ignore=("projection_head.", "prototypes.")),
}

#: every metric of :func:`feature_metrics`, in table order
FEATURE_METRICS: tuple[str, ...] = tuple(m for net in FEATURE_NETS.values() for m, _ in net.metrics)


def _net(name: str) -> FeatureNet:
    if name not in FEATURE_NETS:
        raise InputError(f"unknown feature net {name!r}; known: {', '.join(FEATURE_NETS)}")
    return FEATURE_NETS[name]


def _read_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise InputError(f"{path}: weight file not found")
    from ..weights_file import check_weights_file

    check_weights_file(path, "feature-net weights")  # never unpickles; a plain pickle is refused here
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise InputError(f"{path}: not a readable safetensors file ({err})") from None
    else:
        try:
            sd = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as err:  # noqa: BLE001 (UnpicklingError for objects, RuntimeError, EOFError, ...)
            raise InputError(f"{path}: not a state dict that torch.load(weights_only=True) can read "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if isinstance(sd, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(sd.get(key), dict) and len(sd) <= 4:
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{path}: expected a state dict (names → tensors), got {type(sd).__name__}")
    if all(k.startswith("module.") for k in sd):  # saved from DataParallel (SwAV's checkpoints)
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_feature_net(name: str, path):
    """The torch module of feature net ``name`` (eval mode, no grad) with the weights at ``path``.

    ``path``: a ``.safetensors`` file or a ``torch.save`` state dict (read with
    ``torch.load(weights_only=True)``, never unpickled; a dict holding it under
    ``state_dict``/``model`` and a ``module.`` prefix on every key are accepted). Raises
    :class:`InputError` naming the file when it is missing, unreadable, or its keys or shapes
    do not match the architecture.
    """
    spec = _net(name)
    path = Path(path)
    sd = _read_state_dict(path)
    model = spec.build()
    skip = tuple(f"{d}." for d in spec.drop) + spec.ignore
    sd = {k: v for k, v in sd.items() if not k.startswith(skip)}
    want = model.state_dict().keys()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    if missing or unexpected:
        def few(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = ([f"missing {len(missing)} keys: {few(missing)}"] if missing else []) + \
                ([f"unexpected {len(unexpected)} keys: {few(unexpected)}"] if unexpected else [])
        raise InputError(f"{path}: not {name} ({spec.builder}) weights; " + "; ".join(parts))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        msg = " ".join(line.strip() for line in str(err).splitlines()[1:4])
        raise InputError(f"{path}: weights do not fit {name} ({spec.builder}): {msg}") from None
    return model


def net_features(name: str, model, images_u8, *, base: int | None = None, antialias: bool = True,
                 batch: int = BATCH) -> dict:
    """``{node: (n, d) float32}``: the flattened outputs of net ``name``'s metric nodes on images."""
    import torch

    spec = _net(name)
    images_u8 = _check_u8(images_u8, "images")
    modules = dict(model.named_modules())
    captured: dict = {}
    hooks = [modules[node].register_forward_hook(
        lambda _m, _i, out, node=node: captured.__setitem__(node, out.detach().flatten(1).float().clone()))
        for node in spec.nodes]
    dev = next(model.parameters()).device
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    parts: dict[str, list] = {node: [] for node in spec.nodes}
    try:
        with torch.inference_mode():
            for a in range(0, len(images_u8), batch):
                x = (resize_float(images_u8[a:a + batch], spec.size, base, antialias=antialias) - mean) / std
                model(x.to(dev))
                for node in spec.nodes:
                    parts[node].append(captured.pop(node).cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    return {node: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)) for node, v in parts.items()}


def feature_metrics(pred_u8, true_u8, weights: dict, *, base: int | None = None, antialias: bool = True,
                    device: str = "cpu") -> dict:
    """``{metric: (n,) array or None}`` for every metric of :data:`FEATURE_METRICS` (the nets run
    on ``device``).

    ``weights`` maps a net name of :data:`FEATURE_NETS` to its weight file, or to ``None``; a
    net without a file (``None`` or absent) gives ``None`` for each of its metrics (unavailable,
    never a number). ``twoway_*`` are :func:`two_way` of the features (chance 0.5, higher is
    better), ``dist_*`` :func:`correlation_distance` (lower is better).
    """
    pred_u8, true_u8 = _check_pair(_check_u8(pred_u8, "pred"), _check_u8(true_u8, "true"))
    unknown = sorted(set(weights) - set(FEATURE_NETS))
    if unknown:
        raise InputError(f"unknown feature nets {unknown}; known: {', '.join(FEATURE_NETS)}")
    out: dict = {m: None for m in FEATURE_METRICS}
    for name, spec in FEATURE_NETS.items():
        path = weights.get(name)
        if path is None:
            continue
        model = load_feature_net(name, path).to(device)
        fp = net_features(name, model, pred_u8, base=base, antialias=antialias)
        ft = net_features(name, model, true_u8, base=base, antialias=antialias)
        for metric, (node, kind) in spec.metrics:
            fn = two_way if kind == "two_way" else correlation_distance
            out[metric] = fn(fp[node], ft[node])
        del model, fp, ft
    return out


# ------------------------------------------------------------------------------------- CLIP
def clip_features(encoder, images_u8, size: int | None = 425) -> np.ndarray:
    """``(n, d)`` pooled CLIP embeddings of images (first resized to ``size`` px, PIL bicubic, as
    the image-decoder evaluation always did, then the encoder's own preprocessing), for
    :func:`two_way`; the image chain (:class:`ImageProtocol`) does not apply."""
    from ..decoders.image_decoder import resize_uint8

    x = resize_uint8(images_u8, size) if size else images_u8
    return encoder.encode_images(x, what=("pooled",))["pooled"]
