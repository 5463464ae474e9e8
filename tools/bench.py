"""Time every chapter notebook as nbval runs it: wall seconds and peak RSS, with the total.

    python tools/bench.py                     # all chapters; table + _build/bench.json
    python tools/bench.py chapters/00_lab.ipynb

Exits 1 when a notebook fails or breaks a budget (30 s each, 300 s in all, 1.5 GB RSS),
or when `import ftlab` plus loading a checkpoint takes 2 s or more.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PER_NOTEBOOK_S, TOTAL_S, RSS_MB, IMPORT_S = 30.0, 300.0, 1536.0, 2.0
# -p no:anyio: the notebooks do not use that pytest plugin, whose start-up import of trio
# cost ~0.2 s per notebook; what runs inside each notebook is unchanged.
NBVAL = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:anyio",
         "--nbval-lax", "--nbval-current-env"]


def run_one(nb: str) -> dict:
    """Run in a fresh process, so RUSAGE_CHILDREN holds this notebook's kernel alone."""
    t0 = time.perf_counter()
    proc = subprocess.run(NBVAL + [nb], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    return {"notebook": nb, "wall_s": round(wall, 2), "peak_rss_mb": round(rss_mb, 1),
            "passed": proc.returncode == 0, "tail": proc.stdout[-2000:] if proc.returncode else ""}


def import_time() -> float:
    code = ("import time; t=time.perf_counter(); import ftlab; ftlab.load('base'); "
            "print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--one":
        print(json.dumps(run_one(argv[1])))
        return 0
    nbs = argv or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.ipynb"))
    env = {**os.environ, "FTLAB_QUIET": "1"}
    rows = []
    for nb in nbs:
        out = subprocess.run([sys.executable, __file__, "--one", nb], env=env, capture_output=True, text=True,
                             check=True)
        rows.append(json.loads(out.stdout))
    imp = import_time()
    total = sum(r["wall_s"] for r in rows)
    ok = True
    print(f"{'notebook':40s} {'wall_s':>8s} {'peak_rss_mb':>12s}  status")
    for r in rows:
        bad = [] if r["passed"] else ["FAILED"]
        bad += ["over 30 s"] if r["wall_s"] > PER_NOTEBOOK_S else []
        bad += ["over 1.5 GB"] if r["peak_rss_mb"] > RSS_MB else []
        ok &= not bad
        print(f"{r['notebook']:40s} {r['wall_s']:8.1f} {r['peak_rss_mb']:12.0f}  {', '.join(bad) or 'ok'}")
        if not r["passed"]:
            print(r["tail"])
    print(f"{'total':40s} {total:8.1f} {'':12s}  {'ok' if total <= TOTAL_S else 'over 5 min'}")
    print(f"import ftlab + load('base'): {imp:.2f} s  {'ok' if imp < IMPORT_S else 'over 2 s'}")
    ok &= total <= TOTAL_S and imp < IMPORT_S
    (ROOT / "_build").mkdir(exist_ok=True)
    report = {"rows": [{k: v for k, v in r.items() if k != "tail"} for r in rows], "total_s": round(total, 2),
              "import_and_load_s": round(imp, 3),
              "budgets": {"per_notebook_s": PER_NOTEBOOK_S, "total_s": TOTAL_S, "peak_rss_mb": RSS_MB}}
    (ROOT / "_build" / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    print("wrote _build/bench.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
