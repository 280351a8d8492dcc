"""Summary of `nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,
clocks_event_reasons.active --format=csv -lms 100` (sample it while the GPU table
runs): per 10-second window the median SM and memory clocks, power and temperature, and the clock-event
reasons seen (a bit mask: 0x1 idle, 0x4 software power cap, 0x20 software thermal slowdown, 0x40
hardware thermal, 0x80 hardware power brake, ...).

    python docs/scripts/clocks_summary.py clocks.csv [--window 10]
"""

import argparse
import csv
import statistics
from datetime import datetime


def number(text: str) -> float:
    return float(text.strip().split()[0])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--window", type=float, default=10.0)
    args = ap.parse_args(argv)
    rows = []
    with open(args.path) as f:
        for rec in csv.reader(f):
            try:
                t = datetime.strptime(rec[0].strip(), "%Y/%m/%d %H:%M:%S.%f")
                rows.append((t, number(rec[1]), number(rec[2]), number(rec[3]), number(rec[4]), rec[5].strip()))
            except (ValueError, IndexError):
                continue  # the header, or a line nvidia-smi could not fill
    if not rows:
        print(f"no samples in {args.path}")
        return 1
    t0 = rows[0][0]
    windows = {}
    for r in rows:
        windows.setdefault(int((r[0] - t0).total_seconds() // args.window), []).append(r)
    print(f"samples from {t0:%H:%M:%S} ({len(rows)}): window start, SM MHz (min/median), memory MHz, W, C, reasons")
    for _, rs in sorted(windows.items()):
        sm = [r[1] for r in rs]
        print(
            f"{rs[0][0]:%H:%M:%S}  SM {min(sm):5.0f}/{statistics.median(sm):5.0f}  mem {statistics.median(r[2] for r in rs):5.0f}"  # noqa: E501
            f"  {statistics.median(r[3] for r in rs):6.1f} W  {statistics.median(r[4] for r in rs):3.0f} C"
            f"  {' '.join(sorted({r[5] for r in rs}))}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
