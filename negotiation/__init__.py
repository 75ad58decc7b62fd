"""Deal-or-No-Deal negotiation game and AdvAgent attacks (work in progress: see the issue tracker)."""

__version__ = "0.1.0"
