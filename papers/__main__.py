"""``python -m papers`` builds the paper (same as ``python -m papers.build``)."""

from __future__ import annotations

import sys

from papers.build import main

if __name__ == "__main__":
    sys.exit(main())
