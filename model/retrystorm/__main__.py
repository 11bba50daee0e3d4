"""Allow ``python -m retrystorm``."""

from retrystorm.cli import main

if __name__ == "__main__":
    main()
