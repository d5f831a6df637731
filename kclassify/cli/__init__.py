"""The ``kclassify`` command line: parsing (:mod:`.parser`) and wiring (:mod:`.commands`) only.

Each subcommand parses its flags and calls one library function. TensorFlow is
imported only inside the command that needs it, so ``kclassify --help`` and
``kclassify fit --help`` stay instant.
"""

from __future__ import annotations

import logging
import sys

from ..errors import KClassifyError
from .parser import _count, build_parser

log = logging.getLogger("kclassify")

__all__ = ["_count", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(  # other libraries (TensorFlow's "Assets written to ...") only from -vv on
        level=logging.DEBUG if args.verbose > 1 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
    )
    log.setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KClassifyError as e:
        print(f"kclassify: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kclassify: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
