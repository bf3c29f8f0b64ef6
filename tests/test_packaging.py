"""What `pip install jaxmarks` installs: the library and its dataset builders, nothing else."""

import shutil
import subprocess
import sys
import zipfile

from tests import helpers


def test_the_wheel_holds_only_the_library(tmp_path):
  src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
  shutil.copytree(helpers.REPO_ROOT, src, ignore=shutil.ignore_patterns(
      ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", "notebooks"))
  r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                      "--quiet", "-w", str(tmp_path), str(src)],
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  (wheel,) = tmp_path.glob("jaxmarks-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
  assert top == {"jaxmarks", "tfds_builders"}, sorted(top)
  assert "jaxmarks/cli/main.py" in names and "jaxmarks/configs/dan.py" in names
  assert any(n.startswith("jaxmarks/bundled/cpr_300w/") for n in names)
  assert "jaxmarks/bundled/face_roll/arrays.npz" in names  # any_roll's roll network
  entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
  assert "jaxmarks = jaxmarks.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
