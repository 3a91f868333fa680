"""`python -m services.notifications`: the notifications service alone, as a deployment runs it."""

from ensemble.cli import app

if __name__ == "__main__":
    app(["notifications"])
