"""Codes drawn on the server as inline SVG, so that no code library reaches the browser: QR
codes (segno) for a wallet card's link."""

from __future__ import annotations

import segno
from markupsafe import Markup


def qr_svg(data: str, title: str) -> Markup:
    """`data` as a QR code, an <svg> with `title` for screen readers. Medium error correction,
    a quiet zone of four modules (what phone cameras need), dark on white."""
    code = segno.make(data, error="m")
    svg = code.svg_inline(scale=6, border=4, dark="#000", light="#fff", title=title,
                          svgclass="qr", lineclass=None, omitsize=True)  # fmt: skip
    return Markup(svg.replace("<svg ", '<svg role="img" ', 1))  # noqa: S704 - segno's, escaped
