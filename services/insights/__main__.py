"""`python -m services.insights`: the insights service alone, as a deployment runs it."""

from ensemble.cli import app

if __name__ == "__main__":
    app(["insights"])
