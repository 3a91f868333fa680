"""Webhooks: the public events, signed and POSTed to integrators' endpoints, per district."""
