"""Check an mlhead HTML report in headless Chromium: no script error, no broken image; screenshots.

    python tools/check_html.py report.html --screenshot phone.png --screenshot-wide wide.png
    python tools/check_html.py --runs runs/ --out build/report.html --screenshot build/report-390.png
    python tools/check_html.py --demo --out build/report.html      # tiny synthetic runs

A copy of the page gets two injected scripts: the first (top of <head>) records every error event
(script errors and resources that fail to load); the second, on window load, checks that every <img>
has loaded with naturalWidth > 0 and writes the findings into an attribute of <html>. Chromium dumps
the DOM (``--dump-dom`` after ``--virtual-time-budget``) and the attribute is read back. Network
access is blocked (``--host-resolver-rules``), so a page that needs the network fails too.

Exit codes: 0 ok (or Chromium absent: "skipped"), 1 the page has errors, 2 usage errors.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_HEAD = ("<script>window.__mlheadErrors=[];window.addEventListener('error',function(e){var t=e.target;"
         "__mlheadErrors.push(t&&t.tagName?('failed to load <'+t.tagName.toLowerCase()+'>'):"
         "('script error: '+e.message));},true);</script>")
_TAIL = ("<script>window.addEventListener('load',function(){var errs=window.__mlheadErrors.slice(),"
         "imgs=document.images;for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||!imgs[i].naturalWidth)"
         "errs.push('broken image #'+i+' ('+(imgs[i].alt||'no alt')+')');}document.documentElement."
         "setAttribute('data-mlhead-check',JSON.stringify({images:imgs.length,errors:errs}));});</script>")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
          "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000",
          "--run-all-compositor-stages-before-draw"]


def find_chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _chromium(exe: str, args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    cmd = [exe, *_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def check_page(exe: str, page: Path) -> dict:
    """Load ``page`` (an instrumented copy) in Chromium; returns {"images": n, "errors": [...]}."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"<head[^>]*>", lambda m: m.group(0) + _HEAD, text, count=1) if "<head" in text else _HEAD + text
    text = text.replace("</body>", _TAIL + "</body>") if "</body>" in text else text + _TAIL
    with tempfile.TemporaryDirectory(prefix="check-html-") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(text, encoding="utf-8")
        res = _chromium(exe, ["--dump-dom", copy.resolve().as_uri()], Path(tmp))
    m = re.search(r'data-mlhead-check="([^"]*)"', res.stdout)
    if not m:
        return {"images": 0, "errors": [f"the check did not run (chromium exit {res.returncode}): "
                                        f"{res.stderr.strip()[-500:]}"]}
    return json.loads(html.unescape(m.group(1)))


def screenshot(exe: str, page: Path, out: Path, width: int, height: int = 2000) -> None:
    """Write a PNG screenshot of ``page`` at ``width`` x ``height`` pixels."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="check-html-") as tmp:
        _chromium(exe, [f"--screenshot={out.resolve()}", f"--window-size={width},{height}",
                        page.resolve().as_uri()], Path(tmp))
    if not out.is_file():
        raise SystemExit(f"error: chromium wrote no screenshot {out}")


def _demo_runs(root: Path) -> Path:
    """A few tiny synthetic evaluated runs (2 losses x 2 seeds, with history) under ``root``."""
    import numpy as np

    from mlhead.rules import DecisionRule

    rng = np.random.default_rng(0)
    y = (rng.random((60, 5)) < 0.3).astype(np.uint8)
    rule = DecisionRule("softmax", 0.05)
    for li, loss in enumerate(("crossentropy", "sigmoidf1")):
        for seed in (0, 1):
            run = root / f"{loss}-s{seed}"
            (run / "eval").mkdir(parents=True)
            cfg = {"loss": loss, "loss_options": {}, "seed": seed, "dataset": "demo", "backbone": "none"}
            (run / "config.json").write_text(json.dumps(cfg))
            doc = {"split": "test", "rule": rule.to_dict(), "run": cfg,
                   "metrics": rule.evaluate(rng.normal(size=y.shape) + (0.5 + li) * y, y)}
            (run / "eval" / f"test__{rule.slug}.json").write_text(json.dumps(doc))
            (run / "history.csv").write_text("epoch,train_loss,val_loss,val_micro_f1\n" + "".join(
                f"{e},{1 / (e + 1)},{1.2 / (e + 1)},{20 + 5 * e + li}\n" for e in range(5)))
    return root


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("page", nargs="?", type=Path, help="the HTML file to check (or use --runs/--demo)")
    ap.add_argument("--runs", nargs="+", type=Path, help="render these runs with mlhead.report.render_html first")
    ap.add_argument("--demo", action="store_true", help="render tiny synthetic runs first")
    ap.add_argument("--out", type=Path, default=Path("build/report.html"), help="page written by --runs/--demo")
    ap.add_argument("--screenshot", type=Path, help="phone-width screenshot (390 x 2000) PNG")
    ap.add_argument("--screenshot-wide", type=Path, help="desktop screenshot (1280 x 2000) PNG")
    args = ap.parse_args(argv)
    if (args.page is None) == (args.runs is None and not args.demo):
        ap.error("give one of: PAGE, --runs RUNS..., --demo")
    exe = find_chromium()
    if exe is None:
        print("check-html: skipped (chromium not installed; apt-get install chromium)")
        return 0
    page = args.page or _render(args)
    result = check_page(exe, page)
    for shot, width in ((args.screenshot, 390), (args.screenshot_wide, 1280)):
        if shot:
            screenshot(exe, page, shot, width)
            print(f"wrote {shot}")
    if result["errors"]:
        print(f"check-html: {page}: FAILED", *result["errors"], sep="\n  ")
        return 1
    print(f"check-html: {page}: ok ({result['images']} images loaded, no script errors)")
    return 0


def _render(args) -> Path:
    from mlhead.report import render_html

    if args.demo:
        tmp = Path(tempfile.mkdtemp(prefix="mlhead-demo-runs-"))
        return render_html([_demo_runs(tmp)], args.out, command=["tools/check_html.py", "--demo"])
    return render_html(args.runs, args.out, command=["tools/check_html.py", "--runs", *map(str, args.runs)])


if __name__ == "__main__":
    sys.exit(main())
