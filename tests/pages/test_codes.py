"""Codes drawn on the server: what a scanner or a camera reads off them is what they hold."""

from __future__ import annotations

import pytest
import zxingcpp
from barcode.writer import ImageWriter

from webapp.pages.codes import _Code128, code128_svg, qr_svg


@pytest.mark.parametrize("number", ["999000001", "990", "99", "12345678", "7", "M-1001", "ABC"])
def test_a_member_number_scans_back_as_itself(number):
    """python-barcode on its own turned a leading "99" into a code-set switch: 999000001
    scanned as 9000001. The same drawing, as pixels, decoded by zxing-cpp."""
    png = _Code128(number, writer=ImageWriter()).render(
        {"module_height": 12.0, "module_width": 0.3, "quiet_zone": 4.0, "write_text": False}
    )
    assert [code.text for code in zxingcpp.read_barcodes(png)] == [number]


def test_the_svgs_need_no_inline_style_and_say_what_they_are():
    """The pages' Content-Security-Policy allows no inline styles."""
    bars = code128_svg("999000001", "Member number as a barcode")
    square = qr_svg("https://example.com/card", "Membership card")
    for svg in (bars, square):
        assert svg.startswith("<svg") and 'role="img"' in svg and "style=" not in svg
        assert "viewBox=" in svg, "it scales with the page"
    assert 'aria-label="Member number as a barcode"' in bars
    assert "<title>Membership card</title>" in square
