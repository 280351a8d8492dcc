"""The `qref` command line. `qref check` compares the reference with every installed peer library."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="qref", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="reference vs installed peer libraries on a fixed input battery")
    check.add_argument("peers", nargs="*", help="peers to check (default: every known one)")
    check.add_argument("--quick", action="store_true", help="block sizes 64 and 4096 only")
    args = parser.parse_args(argv)
    if args.command == "check":
        from conformance.check import run  # the peers need torch; the reference itself does not

        return run(args.peers or None, quick=args.quick)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
