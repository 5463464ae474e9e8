"""Print requirements.txt: a header, then `pip freeze --exclude-editable` of a venv.

    python tools/lock.py _build/lock > requirements.txt     # what `make lock` runs

The venv is made by `make lock` from requirements.in, with torch==2.13.0 installed
first. The local-version tag of the CPU wheel (`+cpu`) is dropped, so the pin also
matches where the same release comes without it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEADER = """\
# Exact pins for the book and CI. Do not edit by hand: edit requirements.in, then run
# `make lock` (a clean venv, torch==2.13.0 first, then `pip freeze --exclude-editable`).
# ftlab itself is installed from this checkout by `make setup`; pyproject.toml holds its
# loose ranges. torch==2.13.0 resolves to the CPU wheel on the course machines.
"""


def main(venv: str) -> int:
    py = Path(venv) / "bin" / "python"
    out = subprocess.run([str(py), "-m", "pip", "freeze", "--exclude-editable"],
                         capture_output=True, text=True, check=True).stdout
    keep = [ln for ln in out.splitlines()
            if ln and not ln.startswith("#") and not ln.lower().startswith("ftlab")]
    lines = sorted((ln.split("+", 1)[0] if "==" in ln else ln for ln in keep), key=str.lower)
    sys.stdout.write(HEADER + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1]))
