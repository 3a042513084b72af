"""Codes drawn on the server as inline SVG, so that no code library reaches the browser: QR
codes (segno) for a wallet card's link, Code 128 (python-barcode) for a member number that a
till's scanner reads into the POS."""

from __future__ import annotations

import re

import segno
from barcode import Code128
from barcode.writer import SVGWriter
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


def code128_svg(text: str, label: str) -> Markup:
    """`text` as a Code 128 barcode: an <svg> that scales (a viewBox in millimetres), with
    `label` for screen readers and no text under the bars (the page shows the number itself)."""
    raw = (
        _Code128(text, writer=SVGWriter())
        .render(
            {"module_height": 12.0, "module_width": 0.3, "quiet_zone": 4.0, "write_text": False}
        )
        .decode()
    )
    svg = raw[raw.index("<svg") :]
    size = re.search(r'width="([\d.]+)mm" height="([\d.]+)mm"', svg)
    svg = (
        re.sub(r"<!--.*?-->", "", svg, flags=re.S)
        .replace("mm", "")
        .replace(' id="barcode_group"', "")
    )
    # Presentation attributes, not style="...": the pages' CSP allows no inline styles.
    svg = re.sub(r'style="fill:(\w+);?"', r'fill="\1"', svg)
    width, height = size.groups()
    svg = svg.replace(
        f'width="{width}" height="{height}"',
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" class="barcode"',
        1,
    )
    return Markup(svg)  # noqa: S704 - python-barcode's drawing of our own digits
