"""Training of negotiation agents: :mod:`~negotiation.training.config` (settings and presets),
:mod:`~negotiation.training.supervised` (the SV agent), :mod:`~negotiation.training.reinforce` (the RL agent and
the RL attacker), :mod:`~negotiation.training.adversarial` (adversarial self-play training),
:mod:`~negotiation.training.evaluate` (perplexity and self-play), and :mod:`~negotiation.training.checkpoint`
(the run folder they share)."""
