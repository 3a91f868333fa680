"""`python -m services.engagement`: the engagement service alone, as a deployment runs it."""

import sys

from ensemble.cli import app

if __name__ == "__main__":
    app(["engagement", *sys.argv[1:]])  # so --help answers instead of starting it
