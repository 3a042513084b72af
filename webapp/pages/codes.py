"""Codes drawn on the server as inline SVG, so that no code library reaches the browser: QR
codes (segno) for a wallet card's link, Code 128 (python-barcode) for a member number that a
till's scanner reads into the POS."""

from __future__ import annotations

import re

import segno
from barcode import Code128
from markupsafe import Markup, escape


def qr_svg(data: str, title: str) -> Markup:
    """`data` as a QR code, an <svg> with `title` for screen readers. Medium error correction,
    a quiet zone of four modules (what phone cameras need), dark on white."""
    code = segno.make(data, error="m")
    svg = code.svg_inline(scale=6, border=4, dark="#000", light="#fff", title=title,
                          svgclass="qr", lineclass=None, omitsize=True)  # fmt: skip
    return Markup(svg.replace("<svg ", '<svg role="img" ', 1))  # noqa: S704 - segno's, escaped


class _Code128(Code128):
    """python-barcode's Code 128, less a mistake in its start-code shortening: it takes a
    first pair of digits "99" (code set C's value 99) for a switch to code set C and drops it,
    so 999000001 scanned as 9000001. Encoding starts in code set C, so a switch right after
    the start can only be to B (100) or A (101): only those are shortened. And each drawing
    starts afresh (the original keeps the last code set between two builds)."""

    def _build(self) -> list[int]:
        self._charset, self._buffer = "C", ""  # each drawing from the start: no state left over
        return super()._build()

    def _try_to_optimize(self, encoded: list[int]) -> list[int]:
        if encoded[0] == 105 and len(encoded) > 1 and encoded[1] in (100, 101):
            return super()._try_to_optimize(encoded)
        return encoded


QUIET_MODULES = 12  # Code 128 asks for at least ten modules of white on each side
BAR_HEIGHT = 40  # modules: 12 mm bars at 0.3 mm a module, as a till's scanner reads them


def code128_svg(text: str, label: str) -> Markup:
    """`text` as a Code 128 barcode: an <svg> that scales (a viewBox of modules), with `label`
    for screen readers and no text under the bars (the page shows the number itself). The
    code comes from python-barcode; the bars are drawn here, one <rect> per bar, because its
    SVG writer builds an XML DOM for every drawing (about 1.5 ms a result page)."""
    pattern = _Code128(text).build()[0]
    bars, x = [], QUIET_MODULES
    for run in re.finditer(r"1+|0+", pattern):
        width = len(run.group())
        if run.group()[0] == "1":
            bars.append(f'<rect x="{x}" y="0" width="{width}" height="{BAR_HEIGHT}"/>')
        x += width
    total = x + QUIET_MODULES
    return Markup(  # noqa: S704 - bars of our own drawing; the label is escaped
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {total} {BAR_HEIGHT}" '
        f'role="img" aria-label="{escape(label)}" class="barcode" shape-rendering="crispEdges">'
        f'<rect width="{total}" height="{BAR_HEIGHT}" fill="white"/>'
        f'<g fill="black">{"".join(bars)}</g></svg>'
    )
