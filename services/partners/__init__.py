"""Partners: the directory of community partners, their capacity, and matching referrals."""
