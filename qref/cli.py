"""The `qref` command line: `qref check` (the main job), `conform`, `validate`, `vectors`, `init`,
`experiment`.

Exit status: 0 success (every case exact, certified or a known divergence); 1 an unexplained
mismatch or a failing vector or test; 2 a usage or input error (one line on stderr naming the
argument; `qref --debug ...` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys

EXIT_CODES = """exit status:
  0  success: every case exact, certified or a known divergence
  1  an unexplained mismatch, a failing vector or a failing test
  2  a usage or input error (one line on stderr; --debug for the traceback)"""

GROUPWISE_LIBRARIES = ("compressed-tensors", "hqq", "optimum-quanto", "torchao-int4")
LIBRARIES = ("bitsandbytes", "torchao", "auto-gptq", *GROUPWISE_LIBRARIES)
VALIDATE_LIBRARIES = ("bitsandbytes", "torchao", "peft", "auto-gptq", "peft-qalora", *GROUPWISE_LIBRARIES)


class UsageError(Exception):
    """A command-line argument that cannot be used; the message names it."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qref",
        description=__doc__.split("\n\n")[0],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    check = sub.add_parser(
        "check",
        help="every backend and installed library vs the reference (the main job)",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    check.add_argument(
        "peers",
        nargs="*",
        choices=[[], *LIBRARIES],
        metavar="LIBRARY",
        help=f"libraries to check: {', '.join(LIBRARIES)} (default: every installed one)",
    )
    check.add_argument("--quick", action="store_true", help="block sizes 64 and 4096 only")
    check.add_argument(
        "--backend",
        action="append",
        dest="backends",
        default=None,
        metavar="NAME[:DEVICE]",
        help="backend to check (repeatable; default: every registered one on every device)",
    )
    check.add_argument("--no-backends", action="store_true", help="libraries only")
    check.add_argument("--no-libraries", action="store_true", help="backends only")
    check.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    check.add_argument("--width", type=int, default=120, help="text table width (default 120)")
    check.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

    conform = sub.add_parser(
        "conform", help="the hypothesis conformance suite against one backend", epilog=EXIT_CODES, formatter_class=fmt
    )
    conform.add_argument("backend", help="NAME[:DEVICE], e.g. torch:cuda")
    conform.add_argument(
        "--profile",
        default=None,
        choices=("ci", "gpu", "dev"),
        help="hypothesis settings: ci (default, 40 examples), gpu (200) or dev (1000)",
    )
    conform.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")

    validate = sub.add_parser(
        "validate",
        help="installed libraries vs their qref profiles, with minimal examples",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    validate.add_argument(
        "libraries",
        nargs="*",
        choices=[[], *VALIDATE_LIBRARIES],
        metavar="LIBRARY",
        help=f"{', '.join(VALIDATE_LIBRARIES)} (default: all)",
    )
    validate.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    validate.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    validate.add_argument("--quick", action="store_true", help="fewer block sizes and cases")
    validate.add_argument(
        "--device",
        action="append",
        dest="devices",
        default=None,
        choices=("cpu", "cuda"),
        help="cpu or cuda (repeatable; default: every device a library runs on)",
    )

    vectors = sub.add_parser("vectors", help="golden test vectors: export them, or replay them through a backend")
    vsub = vectors.add_subparsers(dest="action", required=True)
    vexport = vsub.add_parser("export", help="write the JSON vector files and their schema to DIR")
    vexport.add_argument("directory")
    vexport.add_argument("--overwrite", action="store_true", help="write into a non-empty DIR")
    vcheck = vsub.add_parser("check", help="replay the vector files in DIR through a backend")
    vcheck.add_argument("directory")
    vcheck.add_argument("--backend", default="numpy", help="NAME[:DEVICE] (default: numpy, the reference)")

    sub.add_parser(
        "experiment", help="the trained-model experiment (from a source checkout; args after it)", add_help=False
    )

    init = sub.add_parser(
        "init",
        help="a 4-bit base and a LoRA adapter from a model, for transformers and PEFT",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    init.add_argument("model", metavar="MODEL", help="a transformers model folder or a .safetensors file")
    init.add_argument("out", metavar="OUT", help="the folder to write: OUT/base, OUT/adapter, OUT/qref_init.json")
    init.add_argument("--method", default="loftq", choices=("qlora", "loftq", "lqlora", "quailora", "qalora"))
    init.add_argument("--rank", type=int, default=16, help="LoRA rank r (default 16)")
    init.add_argument("--alpha", type=float, default=None, help="lora_alpha (default: the rank, scaling 1)")
    init.add_argument("--quant-type", default="nf4", choices=("nf4", "fp4"))
    init.add_argument("--blocksize", type=int, default=64)
    init.add_argument("--double-quant", action="store_true", help="8-bit absmax, bitsandbytes' layout")
    init.add_argument("--iters", type=int, default=5, help="LoftQ/LQ-LoRA alternations (default 5)")
    init.add_argument("--svd", default="randomized", choices=("randomized", "exact"))
    init.add_argument("--group-size", type=int, default=32, help="qalora: GPTQ group and pooling group (default 32)")
    init.add_argument("--gptq-format", default="v1", choices=("v1", "v2"), help="qalora: gptq / gptq_v2")
    init.add_argument("--backend", default="auto", help="NAME[:DEVICE] (default: torch:cuda, torch:cpu, numpy)")
    init.add_argument("--seed", type=int, default=0, help="seed of the qlora method's A")
    init.add_argument("--target-modules", default=None, help="comma-separated PEFT names, e.g. q_proj,v_proj")
    init.add_argument("--target-regex", default=None, help="a regex matching whole module names")
    init.add_argument("--on-bad-tensor", default="stop", choices=("stop", "skip"))
    init.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    init.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv[:1]
    rest = argv[1:] if debug else argv
    if rest[:1] == ["experiment"]:
        try:
            from experiments.run import main as experiment_main
        except ImportError:
            print(
                "qref experiment: error: the experiment runs from a source checkout of qref "
                "(python -m experiments.run); it is not part of the installed package",
                file=sys.stderr,
            )
            return 2
        return experiment_main(rest[1:])
    args = parser().parse_args(argv)  # argparse itself exits 2 with a usage line on a bad argument
    from .registry import BackendUnavailable

    try:
        return _run(args)
    except (UsageError, ValueError, TypeError, OSError, KeyError, BackendUnavailable) as e:
        if args.debug:
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"qref {args.command}: error: {message}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "check":
        from qref.conformance.check import run

        err = sys.stderr  # bound now: third-party output is redirected while the libraries run
        progress = None if args.quiet else (lambda line: print(line, file=err, flush=True))
        if args.no_backends and args.no_libraries:
            raise UsageError("--no-backends with --no-libraries leaves nothing to check")
        if args.width < 60:
            raise UsageError(f"--width {args.width}: at least 60")
        return run(
            [] if args.no_libraries else (args.peers or None),
            quick=args.quick,
            backends=[] if args.no_backends else args.backends,
            fmt=args.format,
            width=args.width,
            progress=progress,
        )
    if args.command == "vectors":
        if args.action == "export":
            from qref.conformance.vectors import export

            for path in export(args.directory, overwrite=args.overwrite):
                print(path)
            return 0
        from qref.conformance.vectors_check import check as check_vectors

        return check_vectors(args.directory, args.backend)
    if args.command == "validate":
        if args.json_path is not None and not args.json_path.strip():
            raise UsageError("--json: give a file name")
        from qref.conformance.validate import main as validate_main

        return validate_main(args.libraries or None, args.quick, args.json_path, args.devices, overwrite=args.overwrite)
    if args.command == "init":
        from .init_driver import InitConfig, initialise_model, summary

        modules = None
        if args.target_modules is not None:
            modules = tuple(m.strip() for m in args.target_modules.split(",") if m.strip())
            if not modules:
                raise UsageError("--target-modules: give at least one module name")
        cfg = InitConfig(
            method=args.method,
            rank=args.rank,
            alpha=args.alpha,
            quant_type=args.quant_type,
            blocksize=args.blocksize,
            double_quant=args.double_quant,
            iters=args.iters,
            svd=args.svd,
            backend=args.backend,
            seed=args.seed,
            on_bad_tensor=args.on_bad_tensor,
            target_modules=modules,
            target_regex=args.target_regex,
            group_size=args.group_size,
            gptq_format=args.gptq_format,
        )
        reports = initialise_model(args.model, args.out, cfg, args.overwrite, None if args.quiet else sys.stderr)
        print(summary(reports))
        print(f"wrote {args.out}/base (transformers) and {args.out}/adapter (PEFT)")
        return 0
    if args.command == "conform":
        import pytest

        from .registry import BackendUnavailable, get_backend

        try:
            get_backend(args.backend)  # an unknown name is a usage error here, not a skipped suite
        except BackendUnavailable:
            pass  # the suite reports it as skipped, with the reason
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
    raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it


if __name__ == "__main__":
    sys.exit(main())
