"""Engagement: families, how to reach them, outreach for referrals, and the contact log."""
