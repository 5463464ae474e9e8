"""Rerun every chapter notebook under other seeds; report which asserted margins fail.

    python tools/seeds.py                  # offsets 1 2 3, every chapter
    python tools/seeds.py 1 2 3 -- chapters/00_lab.ipynb

FTLAB_SEED_OFFSET shifts every seed the course uses (ftlab.seeds.shift), so each run
draws other data, other initialisations and other samples. Exits 1 on any failure.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

from bench import NBVAL, ROOT  # the bench's nbval command, so both run notebooks alike


def main(argv: list[str]) -> int:
    offsets, nbs = argv, []
    if "--" in argv:
        i = argv.index("--")
        offsets, nbs = argv[:i], argv[i + 1:]
    offsets = [int(o) for o in offsets] or [1, 2, 3]
    nbs = nbs or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.ipynb"))
    failures = []
    for off in offsets:
        env = {**os.environ, "FTLAB_SEED_OFFSET": str(off), "FTLAB_QUIET": "1"}
        for nb in nbs:
            proc = subprocess.run(NBVAL + [nb], cwd=ROOT, env=env, capture_output=True, text=True)
            status = "ok" if proc.returncode == 0 else "FAILED"
            print(f"offset {off}  {nb:40s} {status}", flush=True)
            if proc.returncode:
                errs = re.findall(r"^E .*AssertionError.*$|^E +assert .*$|AssertionError: .*$", proc.stdout, re.M)
                failures.append((off, nb, errs[-3:] or [proc.stdout[-800:]]))
    for off, nb, errs in failures:
        print(f"\n--- offset {off}: {nb}")
        print("\n".join(errs))
    print(f"\n{len(failures)} failed, {len(offsets) * len(nbs) - len(failures)} passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
