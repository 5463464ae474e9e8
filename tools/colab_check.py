"""Run chapters the way Colab runs them, without Colab.

    python tools/colab_check.py                       # chapter 00 (part of `make test`)
    python tools/colab_check.py --all                 # every chapter (`make colab-check`)
    python tools/colab_check.py chapters/05_quantization.ipynb

What it does, and what each step catches:
1. builds the ftlab wheel from this checkout (a checkpoint or module missing from the
   wheel);
2. makes `_build/colab/venv` holding only what Colab preinstalls and this check needs
   from it: torch, numpy, matplotlib, ipykernel, at the pins of requirements.txt
   (a dependency missing from pyproject.toml);
3. copies one chapter's `.ipynb` alone into an empty temporary folder (a chapter that
   reads a file from the repository);
4. runs it top to bottom with `google.colab` importable, so the chapter's own Colab
   setup cell really runs: its `ftlab @ git+...` install is pointed at the wheel of
   step 1, and anything else it installs (chapter 09's TRL, bitsandbytes, gguf) comes
   from the package index, as on Colab.

Exits 1 and names the chapter and the cell when one fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "_build" / "colab"
VENV = WORK / "venv"
PREINSTALLED = ("torch", "numpy", "matplotlib", "ipykernel")
INSTALL_RE = re.compile(r'"ftlab @ git\+[^"]+"')
FAKE_COLAB = ("import sys, types\n"
              "sys.modules['google.colab'] = types.ModuleType('google.colab')  # colab_check")


def pins() -> list[str]:
    """The Colab-preinstalled packages at the versions requirements.txt pins."""
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name = line.split("==")[0].strip().lower()
        if name in PREINSTALLED and "==" in line:
            found[name] = line.strip()
    missing = [p for p in PREINSTALLED if p not in found]
    if missing:
        raise SystemExit(f"requirements.txt pins none of {missing}")
    return [found[p] for p in PREINSTALLED]


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def colab_venv() -> Path:
    """A venv with only Colab's preinstalled packages; rebuilt when the pins change."""
    want = "\n".join(pins())
    stamp = VENV / ".colab-pins"
    py = VENV / "bin" / "python"
    if not (py.exists() and stamp.exists() and stamp.read_text() == want):
        shutil.rmtree(VENV, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(VENV)])
        run([str(py), "-m", "pip", "install", "-q", *pins()])
        stamp.write_text(want)
    return py


def build_wheel(out: Path) -> Path:
    # setuptools stages the package in ./build: a stale one would ship deleted modules.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)])
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    wheels = sorted(out.glob("ftlab-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one ftlab wheel in {out}, found {wheels}")
    return wheels[0]


def as_on_colab(nb_path: Path, wheel: Path) -> nbformat.NotebookNode:
    """The notebook with `google.colab` importable and its install line aimed at the wheel."""
    nb = nbformat.read(nb_path, as_version=4)
    setup = [c for c in nb.cells if c.cell_type == "code" and INSTALL_RE.search(c.source)]
    if len(setup) != 1:
        raise SystemExit(f"{nb_path.name}: expected one Colab setup cell, found {len(setup)}")
    setup[0].source = INSTALL_RE.sub(f'"ftlab @ {wheel.as_uri()}"', setup[0].source)
    nb.cells.insert(0, nbformat.v4.new_code_cell(FAKE_COLAB))
    return nb


def kernel_dir(py: Path, root: Path) -> Path:
    spec = root / "kernels" / "colab"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "colab-check", "language": "python"}))
    return root


def check(nb_path: Path, py: Path, wheel: Path) -> bool:
    # The venv is kept between runs: drop the ftlab of the last run, so the setup cell
    # must install this checkout's wheel.
    run([str(py), "-m", "pip", "uninstall", "-q", "-y", "ftlab"])
    with tempfile.TemporaryDirectory(prefix="colab-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "content"   # Colab's working folder; nothing else of ours is in it
        folder.mkdir()
        shutil.copy(nb_path, folder / nb_path.name)
        nb = as_on_colab(folder / nb_path.name, wheel)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        os.environ["JUPYTER_PATH"] = str(kernel_dir(py, tmp / "jupyter"))
        client = NotebookClient(nb, kernel_name="colab", timeout=900,
                                resources={"metadata": {"path": str(folder)}})
        client.km = client.create_kernel_manager()
        try:
            client.start_new_kernel(env=env, cwd=str(folder))
            client.start_new_kernel_client()
            for i, cell in enumerate(nb.cells):
                client.execute_cell(cell, i)
        except CellExecutionError as err:
            print(f"FAILED {nb_path.name}:\n{str(err)[-3000:]}", flush=True)
            return False
        finally:
            client._cleanup_kernel()
    print(f"ok     {nb_path.name}", flush=True)
    return True


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true", help="every chapter twin")
    args = ap.parse_args(argv)
    nbs = sorted((ROOT / "chapters").glob("*.ipynb")) if args.all else args.notebooks
    nbs = [p.resolve() for p in nbs] or [ROOT / "chapters" / "00_lab.ipynb"]
    WORK.mkdir(parents=True, exist_ok=True)
    py = colab_venv()
    with tempfile.TemporaryDirectory(prefix="wheel-") as out:
        wheel = build_wheel(Path(out))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:12]
        print(f"wheel {wheel.name} sha256:{digest}", flush=True)
        failed = [nb.name for nb in nbs if not check(nb, py, wheel)]
    print(f"\n{len(failed)} failed, {len(nbs) - len(failed)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
