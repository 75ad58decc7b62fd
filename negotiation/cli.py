"""``negotiation`` console entry point."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="negotiation", description="Deal-or-No-Deal negotiation and AdvAgent.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    args = parser.parse_args(argv)
    from negotiation import __version__

    if args.version:
        print(__version__)
        return 0
    parser.print_help()
    return 0
