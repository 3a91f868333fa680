"""`python -m services.console`: the console alone, as a deployment runs it."""

from ensemble.cli import app

if __name__ == "__main__":
    app(["console"])
