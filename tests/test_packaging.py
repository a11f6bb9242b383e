"""Packaging details users notice: an SPDX license, a typed public API with py.typed,
``python -m pyro_lvm``, and a wheel that installs into a fresh venv and runs ``pyro-lvm demo``."""

import inspect
import os
import shutil
import site
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

import pyro_lvm
from pyro_lvm.evaluation import compare_runs as compare
from pyro_lvm.training import tracking

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    # setuptools reads a license string as SPDX from version 77 on.
    assert "setuptools>=77" in project["build-system"]["requires"][0]


def _unannotated(fn) -> list[str]:
    sig = inspect.signature(fn)
    missing = [name for name, p in sig.parameters.items()
               if name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append("return")
    return missing


def test_public_api_is_annotated():
    """py.typed promises inline types: every public function and method of the top-level API
    (and the tracking and compare modules) annotates its parameters and return value."""
    objects = [getattr(pyro_lvm, name) for name in pyro_lvm.__all__]
    objects += [getattr(m, n) for m in (tracking, compare) for n in dir(m)
                if not n.startswith("_") and getattr(getattr(m, n), "__module__", None) == m.__name__]
    gaps = {}
    for obj in objects:
        members = [obj] if inspect.isfunction(obj) else [
            f for n, f in vars(obj).items() if inspect.isfunction(f) and (not n.startswith("_") or n == "__init__")
        ] if inspect.isclass(obj) else []
        for fn in members:
            if fn.__module__.startswith("pyro_lvm") and _unannotated(fn):  # not typing's Protocol __init__
                gaps[fn.__qualname__] = _unannotated(fn)
    assert not gaps
    assert (ROOT / "pyro_lvm" / "py.typed").is_file()


def _clean_env() -> dict:
    """The environment without this checkout on PYTHONPATH (so the installed copy is what runs)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_python_dash_m_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "pyro_lvm", "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: pyro-lvm") and "reproduce" in proc.stdout and "compare" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "pyro_lvm", "evaluate", "no/such/run"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("pyro-lvm: error:")


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_the_demo(tmp_path):
    """Build the wheel from a copy of the sources, install it with --no-deps into a new venv
    that sees this environment's packages (torch, pyro, ... already installed) but not this
    checkout, and run the installed ``pyro-lvm demo``."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "pyro_lvm", src / "pyro_lvm", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(src)], check=True, timeout=300, env=_clean_env())
    (wheel,) = dist.glob("pyro_lvm-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "pyro_lvm/py.typed" in names and "pyro_lvm/__main__.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip()
    # The dependencies come from this environment (a plain path line: its .pth files, such as
    # an editable install of this checkout, are not run).
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, timeout=300, env=_clean_env())

    run = tmp_path / "run"
    run.mkdir()
    where = subprocess.run([python, "-c", "import pyro_lvm; print(pyro_lvm.__file__)"], capture_output=True,
                           text=True, check=True, cwd=run, env=_clean_env()).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where
    demo = subprocess.run([env_dir / "bin" / "pyro-lvm", "demo", "--epochs", "1", "--samples", "10",
                           "--no-autoencoder", "--no-figures", "--out", "demo"], capture_output=True, text=True,
                          cwd=run, env=_clean_env(), timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert (run / "demo" / "metrics.json").is_file() and '"log_likelihood"' in demo.stdout
