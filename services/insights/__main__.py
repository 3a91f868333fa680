"""`python -m services.insights`: the insights service alone, as a deployment runs it."""

import sys

from ensemble.cli import app

if __name__ == "__main__":
    app(["insights", *sys.argv[1:]])  # so --help answers instead of starting it
