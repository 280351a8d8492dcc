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
    check.add_argument(
        "--backend",
        action="append",
        dest="backends",
        default=None,
        help="backend NAME[:DEVICE] to check (repeatable; default: every registered one)",
    )
    check.add_argument("--no-backends", action="store_true", help="peer libraries only")
    conform = sub.add_parser("conform", help="the hypothesis conformance suite against one backend")
    conform.add_argument("backend", help="NAME[:DEVICE], e.g. torch:cuda")
    conform.add_argument(
        "--profile", default=None, choices=("ci", "gpu", "dev"), help="hypothesis profile: ci (default), gpu or dev"
    )
    conform.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    validate = sub.add_parser("validate", help="installed libraries vs their qref profiles, with minimal examples")
    validate.add_argument("libraries", nargs="*", help="bitsandbytes, torchao, peft, auto-gptq (default: all)")
    validate.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    validate.add_argument("--quick", action="store_true", help="fewer block sizes and cases")
    validate.add_argument("--device", action="append", dest="devices", default=None, help="cpu or cuda (repeatable)")
    vectors = sub.add_parser("vectors", help="golden test vectors: export them, or replay them through a backend")
    vsub = vectors.add_subparsers(dest="action", required=True)
    vexport = vsub.add_parser("export", help="write the JSON vector files and their schema to DIR")
    vexport.add_argument("directory")
    vcheck = vsub.add_parser("check", help="replay the vector files in DIR through a backend")
    vcheck.add_argument("directory")
    vcheck.add_argument("--backend", default="numpy", help="NAME[:DEVICE] (default: numpy, the reference)")
    sub.add_parser(
        "experiment", help="the trained-model experiment (from a source checkout; args after it)", add_help=False
    )
    init = sub.add_parser("init", help="initialise every 2-D weight of a safetensors checkpoint")
    init.add_argument("src")
    init.add_argument("dst")
    init.add_argument("--method", default="loftq", choices=("qlora", "loftq", "lqlora", "quailora"))
    init.add_argument("--rank", type=int, default=16)
    init.add_argument("--bits", type=int, default=4, choices=(2, 3, 4, 8))
    init.add_argument("--blocksize", type=int, default=64)
    init.add_argument("--dq-blocksize", type=int, default=None)
    init.add_argument("--iters", type=int, default=5)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["experiment"]:
        try:
            from experiments.run import main as experiment_main
        except ImportError:
            print(
                "qref experiment: the experiment runs from a source checkout of qref "
                "(python -m experiments.run); it is not part of the installed package",
                file=sys.stderr,
            )
            return 2
        return experiment_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "init":
        from .init_driver import initialise_checkpoint, summary

        reports = initialise_checkpoint(
            args.src, args.dst, args.method, args.rank, args.bits, args.blocksize, args.dq_blocksize, args.iters
        )
        print(summary(reports))
        return 0
    if args.command == "check":
        from qref.conformance.check import (
            run,  # the peers need torch; the reference itself does not
        )

        return run(args.peers or None, quick=args.quick, backends=[] if args.no_backends else args.backends)
    if args.command == "vectors":
        if args.action == "export":
            from qref.conformance.vectors import export

            for path in export(args.directory):
                print(path)
            return 0
        from qref.conformance.vectors_check import check as check_vectors

        return check_vectors(args.directory, args.backend)
    if args.command == "validate":
        from qref.conformance.validate import main as validate_main

        return validate_main(args.libraries or None, args.quick, args.json_path, args.devices)
    if args.command == "conform":
        import pytest

        profile = ["--qref-profile", args.profile] if args.profile else []
        return int(
            pytest.main(
                [
                    "--pyargs",
                    "qref.conformance",
                    "--qref-backend",
                    args.backend,
                    *profile,
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-o",
                    "addopts=",
                    *args.pytest_args,
                ]
            )
        )
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
