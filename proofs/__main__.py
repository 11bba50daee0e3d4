"""Run every proof and print each theorem with ``checked`` or its failed step."""

from __future__ import annotations

import sys

from proofs import ALL_THEOREMS
from proofs._framework import report


def main() -> int:
    """Check every theorem; return 0 if all were checked, 1 otherwise."""
    ok = report(ALL_THEOREMS, sys.stdout)
    print("all theorems checked" if ok else "some theorems FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
