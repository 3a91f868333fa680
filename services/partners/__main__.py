"""`python -m services.partners`: the partners service alone, as a deployment runs it."""

import sys

from ensemble.cli import app

if __name__ == "__main__":
    app(["partners", *sys.argv[1:]])  # so --help answers instead of starting it
