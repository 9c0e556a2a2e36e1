"""HTML assembly: escaping by construction, PNG data URIs, the page's inline CSS.

Everything that is not a :class:`Markup` (already-built HTML) is escaped with :func:`html.escape`
when it is put into an element, so text from files (captions, config values, method names) can
never inject markup. Images are only ever ``data:image/png;base64,...`` URIs: the page needs no
other file, no network.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Iterable

import numpy as np

__all__ = ["Markup", "esc", "h", "join", "img", "png_bytes", "thumbnail_png", "data_uri", "page", "CSS",
           "DATA_URI_PREFIX"]

DATA_URI_PREFIX = "data:image/png;base64,"
VOID = frozenset({"img", "br", "hr", "meta", "col", "wbr"})


class Markup(str):
    """A string of HTML that is inserted as is (everything else is escaped)."""


def esc(x) -> Markup:
    return x if isinstance(x, Markup) else Markup(html.escape(str(x), quote=True))


def _flat(children) -> Iterable:
    for c in children:
        if c is None:
            continue
        if isinstance(c, (list, tuple)):
            yield from _flat(c)
        else:
            yield c


def join(*children) -> Markup:
    return Markup("".join(esc(c) for c in _flat(children)))


def h(tag: str, *children, **attrs) -> Markup:
    """``<tag attrs>children</tag>``; ``class_="x"`` → ``class="x"``; ``None``/``False`` attributes are dropped."""
    parts = []
    for k, v in attrs.items():
        if v is None or v is False:
            continue
        name = k.rstrip("_").replace("_", "-")
        parts.append(f" {name}" if v is True else f' {name}="{html.escape(str(v), quote=True)}"')
    a = "".join(parts)
    if tag in VOID:
        if any(True for _ in _flat(children)):
            raise ValueError(f"<{tag}> is a void element: it takes no children")
        return Markup(f"<{tag}{a}>")
    return Markup(f"<{tag}{a}>{join(*children)}</{tag}>")


def data_uri(png: bytes) -> str:
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not PNG bytes")
    return DATA_URI_PREFIX + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, **attrs) -> Markup:
    """An ``<img>`` whose source is the PNG itself."""
    return h("img", src=data_uri(png), alt=alt, **attrs)


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of an (H, W, 3|4) or (H, W) uint8 array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def thumbnail_png(image, size: int) -> bytes:
    """PNG of an image (array, PIL image or path), scaled so its longer side is at most ``size``."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        im = Image.fromarray(np.ascontiguousarray(image))
    elif isinstance(image, Image.Image):
        im = image
    else:
        with Image.open(image) as f:
            im = f.convert("RGB")
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    if max(im.size) > size:
        im = im.copy()
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


CSS = """
:root { --fg:#1d232b; --muted:#5b6570; --line:#d8dde3; --bg:#ffffff; --alt:#f5f7f9; --accent:#2a6fb0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 1400px; padding: 1.5em 2em 4em; }
h1 { font-size: 1.7em; margin: 0 0 .3em; }
h2 { font-size: 1.3em; margin: 2em 0 .6em; padding-bottom: .2em; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05em; margin: 1.4em 0 .4em; }
p.summary { font-size: 1.05em; max-width: 75em; }
nav a { margin-right: 1em; color: var(--accent); text-decoration: none; }
.note { color: var(--muted); font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .4em 0 1em; }
th, td { border: 1px solid var(--line); padding: .25em .5em; vertical-align: top; }
th { background: var(--alt); text-align: left; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.subject th { background: #e7edf3; }
td.unavailable { color: var(--muted); font-style: italic; text-align: center; }
table.published { border: 2px dashed #b7791f; }
table.published caption { caption-side: top; text-align: left; font-weight: 600; color: #8a5a12; padding: .3em 0; }
table.grid td { text-align: center; }
table.grid td.text { text-align: left; max-width: 22em; }
table.grid img { display: block; margin: auto; height: auto; }
span.retr img { display: inline; }
span.retr { display: inline-block; margin: 1px; border: 3px solid transparent; }
span.retr.hit { border-color: #2f9e44; }
ul.captions { margin: 0; padding-left: 1.1em; }
figure { margin: .5em 0 1.5em; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .95em; }
pre { background: var(--alt); border: 1px solid var(--line); padding: .8em; overflow-x: auto; font-size: 12.5px; }
code { font-size: .95em; }
"""


def page(title: str, body: Markup) -> str:
    """The whole document."""
    head = h("head", h("meta", charset="utf-8"),
             h("meta", name="viewport", content="width=device-width, initial-scale=1"),
             h("title", title), h("style", Markup(CSS)))
    return "<!DOCTYPE html>\n" + h("html", head, h("body", body), lang="en") + "\n"
