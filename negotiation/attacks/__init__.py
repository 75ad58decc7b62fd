"""AdvAgent: attacks on negotiation agents (thesis section 3.2); see :mod:`negotiation.attacks.objectives`."""
