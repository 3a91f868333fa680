"""Referrals: the lifecycle of a referral from a noticed need to a recorded outcome."""
