"""Generate Shoal's VM size table from Azure's published size data.

Source: the size-series pages of Azure's own documentation, https://github.com/MicrosoftDocs/azure-compute-docs
(published as https://learn.microsoft.com/azure/virtual-machines/sizes/...). Each page's "Basics" table lists
every size of the series with its vCPUs and memory::

    | Size Name | vCPUs (Qty.) | Memory (GB) |
    | --- | --- | --- |
    | Standard_DS1_v2 | 1 | 3.5 |

(older pages, such as the Ev3/Esv3 and the memory-optimised Dv2/DSv2 ones, have a wider table whose first three
columns are the same: ``| Size | vCPU | Memory: GiB | ...``). Memory is in GiB (the pages write "GB" for GiB:
Standard_DS1_v2's 3.5 is the 3584 MiB ``az vm list-sizes`` reports); Shoal stores MiB.

Run it on a checkout of that repository (a sparse one holding the files of ``SERIES`` is enough)::

    python scripts/vmsizes_from_docs.py --docs <checkout of MicrosoftDocs/azure-compute-docs> \\
        --out src/shoal/domain/batch/vmsizes_data.py

The generated module keeps Azure's exact spelling of each name (``Standard_DS1_v2``); Shoal looks names up
case-insensitively, as Azure does. Operators add sizes at start with ``shoal serve --vm-sizes FILE``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

BASE = "articles/virtual-machines/sizes"
# The series pages read, with the commit of MicrosoftDocs/azure-compute-docs each was read at. Families: A v2;
# D v2 (and the memory-optimised D11-15 v2), DS v2; D/Ds v3; D/Ds/Dd/Dds v4; D/Ds/Dd/Dds v5; E/Es v3, Es v4,
# E/Es/Eds v5; Fs v2; HBv3, HC; Ls v3; M; NC v3, NCasT4 v3.
SERIES: dict[str, str] = {
    "general-purpose/av2-series.md": "1827cf353b07fd08b3141bd2e40291e1dbdd4a5f",
    "general-purpose/dv2-series.md": "2e4af98705e2ace519e313d40c5de3c3c7cc45a7",
    "general-purpose/dsv2-series.md": "17c1b3ba618ab2af9af24ef9c9dcc6d02e3f16fd",
    "memory-optimized/dv2-dsv2-series-memory.md": "1dc6d3b8a9340908bc53610bc739534ec59b56d0",
    "general-purpose/dv3-series.md": "05e75b148472c25ac534a9957b0af264acab5f6b",
    "general-purpose/dsv3-series.md": "1827cf353b07fd08b3141bd2e40291e1dbdd4a5f",
    "general-purpose/dv4-series.md": "3b30912d4539fd7ced075085414a6d0bbc4dd403",
    "general-purpose/dsv4-series.md": "05e75b148472c25ac534a9957b0af264acab5f6b",
    "general-purpose/ddv4-series.md": "05e75b148472c25ac534a9957b0af264acab5f6b",
    "general-purpose/ddsv4-series.md": "2072bfd7009384b9fde1357342d91953104e293d",
    "general-purpose/dv5-series.md": "2072bfd7009384b9fde1357342d91953104e293d",
    "general-purpose/dsv5-series.md": "005f8f6e0693849201f057b38475bfaecb85b3e8",
    "general-purpose/ddv5-series.md": "05e75b148472c25ac534a9957b0af264acab5f6b",
    "general-purpose/ddsv5-series.md": "1421aebc3fffd1a74dfea03735683cbca9693c9c",
    "memory-optimized/ev3-esv3-series.md": "680de9713fdd3fde858f4083d88145627149ebeb",
    "memory-optimized/esv4-series.md": "2e4af98705e2ace519e313d40c5de3c3c7cc45a7",
    "memory-optimized/ev5-series.md": "05e75b148472c25ac534a9957b0af264acab5f6b",
    "memory-optimized/esv5-series.md": "0175d5fa261b3b237e603855c1988eb287fbe018",
    "memory-optimized/edsv5-series.md": "1a043fb3a20b0f90dff80bad2dd8cbdff8984386",
    "compute-optimized/fsv2-series.md": "05e75b148472c25ac534a9957b0af264acab5f6b",
    "high-performance-compute/hbv3-series.md": "2e4af98705e2ace519e313d40c5de3c3c7cc45a7",
    "high-performance-compute/hc-series.md": "1a043fb3a20b0f90dff80bad2dd8cbdff8984386",
    "storage-optimized/lsv3-series.md": "05e75b148472c25ac534a9957b0af264acab5f6b",
    "memory-optimized/m-series.md": "2e4af98705e2ace519e313d40c5de3c3c7cc45a7",
    "gpu-accelerated/ncv3-series.md": "1827cf353b07fd08b3141bd2e40291e1dbdd4a5f",
    "gpu-accelerated/ncast4v3-series.md": "2bc777fdc35cfa8d7819d78bc493e8a43af77955",
}

_SUP = re.compile(r"<sup>.*?</sup>")


def _cells(line: str) -> list[str]:
    return [_SUP.sub("", cell).strip() for cell in line.strip().strip("|").split("|")]


def parse_series(text: str) -> list[tuple[str, int, int]]:
    """(name, cores, memory MiB) of each size in the page's size table(s) whose columns are name, vCPUs,
    memory."""
    sizes: list[tuple[str, int, int]] = []
    in_table = False
    for line in text.splitlines():
        if not line.strip().startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if len(cells) >= 3 and cells[0].lower().startswith("size") and "vcpu" in cells[1].lower() \
                and cells[2].lower().startswith("memory"):
            in_table = True
            continue
        if in_table and cells and cells[0].startswith("Standard_"):
            name = cells[0].split()[0]
            cores = int(cells[1].replace(",", ""))
            memory_mib = round(float(cells[2].replace(",", "")) * 1024)
            sizes.append((name, cores, memory_mib))
    return sizes


def render(sizes: dict[str, tuple[str, int, int, str]]) -> str:
    lines = [
        '"""VM sizes as Azure publishes them: name, vCPUs, memory (MiB), and the documentation page they came from.',
        "",
        "GENERATED by scripts/vmsizes_from_docs.py from MicrosoftDocs/azure-compute-docs (the size-series pages under",
        f"{BASE}/, at the commits the script lists). Do not edit: re-run the script.",
        '"""',
        "",
        "SIZES: tuple[tuple[str, int, int, str], ...] = (",
    ]
    for name, cores, memory, page in sorted(sizes.values(), key=lambda s: (s[3], s[1], s[0])):
        lines.append(f"    ({name!r}, {cores}, {memory}, {page!r}),")
    lines.append(")")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, required=True, help="checkout of MicrosoftDocs/azure-compute-docs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sizes: dict[str, tuple[str, int, int, str]] = {}
    for page in SERIES:
        found = parse_series((args.docs / BASE / page).read_text(encoding="utf-8"))
        if not found:
            raise SystemExit(f"{page}: no size table found")
        for name, cores, memory in found:
            sizes.setdefault(name.lower(), (name, cores, memory, page.rsplit("/", 1)[1].removesuffix(".md")))
    args.out.write_text(render(sizes), encoding="utf-8")
    print(f"{len(sizes)} sizes from {len(SERIES)} series pages -> {args.out}")


if __name__ == "__main__":
    main()
