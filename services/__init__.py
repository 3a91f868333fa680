"""Ensemble's five services. Each owns its tables and talks to the others only through events."""
