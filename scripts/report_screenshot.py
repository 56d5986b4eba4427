"""Screenshot a report headless, to look at it as a reviewer would (issue 17's check).

    python scripts/report_screenshot.py [artifacts/report/index.html] [--out DIR] [--width 1280]

Needs a Chromium on PATH (Debian: ``apt-get install chromium``). Writes ``full.png`` and page-sized crops
``page_NN.png`` (1400 px tall) to ``--out``; prints their paths.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = None   # a long report at 1280 px wide is past PIL's default limit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", nargs="?", type=Path, default=Path("artifacts/report/index.html"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--max-height", type=int, default=40000)
    args = ap.parse_args()
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        sys.exit("error: no chromium on PATH (Debian: apt-get install chromium)")
    if not args.report.is_file():
        sys.exit(f"error: {args.report}: no such report (run dvc repro report first)")
    out = args.out or Path(tempfile.mkdtemp(prefix="report-shots-"))
    out.mkdir(parents=True, exist_ok=True)
    full = out / "full.png"
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={args.width},{args.max_height}", f"--screenshot={full}", args.report.resolve().as_uri()],
                   check=True, capture_output=True)
    image = Image.open(full)
    grey = np.asarray(image.convert("L"))
    used = int(np.where(grey.min(axis=1) < 250)[0].max()) + 20   # crop the blank tail of the window
    image = image.crop((0, 0, args.width, min(used, image.height)))
    image.save(full)
    for i, top in enumerate(range(0, image.height, 1400)):
        image.crop((0, top, args.width, min(top + 1400, image.height))).save(out / f"page_{i:02d}.png")
        print(out / f"page_{i:02d}.png")
    print(f"{full} ({image.height} px tall)")


if __name__ == "__main__":
    main()
