"""`python -m services.webhooks`: the webhooks service alone, as a deployment runs it."""

from ensemble.cli import app

if __name__ == "__main__":
    app(["webhooks"])
