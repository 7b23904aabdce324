"""The way the ops team installs: wheels (not editable) into a fresh venv find every capability."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from support import ROOT

pytestmark = pytest.mark.slow

PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))


def test_wheels_install_into_a_fresh_venv_and_list_every_capability(tmp_path: Path):
    dist = tmp_path / "dist"
    for project in [ROOT, *PLUGINS]:
        subprocess.run([sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir",
                        str(dist), str(project)], check=True, capture_output=True)
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == 1 + len(PLUGINS)
    # `opsagent new` works from the wheel: the capability template ships inside it.
    (host_wheel,) = [w for w in wheels if w.name.startswith("opsagent-")]
    template = ROOT / "templates" / "capability"
    with zipfile.ZipFile(host_wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("opsagent/templates/capability/")}
    assert shipped == {
        f"opsagent/templates/capability/{p.relative_to(template)}"
        for p in template.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    py = target / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", *map(str, wheels)], check=True,
                   capture_output=True)
    out = subprocess.run([str(target / "bin" / "opsagent"), "plugins", "--json"], check=True,
                         capture_output=True, text=True).stdout
    rows = json.loads(out)
    assert [r for r in rows if r["status"] == "broken"] == []
    # Installed and loaded; with no configuration the ones that need credentials say which,
    # as the host would at start-up.
    for r in rows:
        if r["status"] != "ok":
            assert r["status"] == "unavailable", r
            assert "not configured; add [credentials." in r["error"], r
    found = {r["msg_type"]: r["distribution"] for r in rows}
    assert found["health_ping"] == "opsagent"
    # every wheel's distribution contributes at least one capability
    dists = {w.name.split("-")[0].replace("_", "-").lower() for w in wheels}
    listed = {d.replace("_", "-").lower() for d in found.values()}
    assert dists == listed, (dists, listed)
    # not editable: the code comes from the venv, not the checkout
    where = subprocess.run([str(py), "-c", "import opsagent; print(opsagent.__file__)"],
                           check=True, capture_output=True, text=True).stdout
    assert str(target) in where
