"""A wheel install, not only an editable one, carries the templates, static files and catalogues."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_templates_static_files_and_compiled_catalogues(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("engage_signup-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ROOT.glob("templates/**/*.html"):
        assert f"webapp/{template.relative_to(ROOT)}" in names
    for asset in ROOT.glob("static/*"):
        assert f"webapp/{asset.relative_to(ROOT)}" in names
    for lang in ("sv", "fi", "nb", "da"):
        assert f"webapp/translations/{lang}/LC_MESSAGES/messages.mo" in names
    assert "webapp/simulator/app.py" in names
