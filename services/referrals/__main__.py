"""`python -m services.referrals`: the referrals service alone, as a deployment runs it."""

import sys

from ensemble.cli import app

if __name__ == "__main__":
    app(["referrals", *sys.argv[1:]])  # so --help answers instead of starting it
