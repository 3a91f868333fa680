"""Notifications: family outreach over email and SMS, in the family's language."""
