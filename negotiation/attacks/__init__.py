"""AdvAgent (thesis section 3.2): attacks on negotiation agents.

* :mod:`~negotiation.attacks.objectives`: the favourable set, decision hinge (3.10) and ``<selection>``
  constraint (3.9), batched over games.
* :mod:`~negotiation.attacks.greedy`: the batched trial scorer and the greedy word-substitution search of the
  reactive (3.11) and preemptive (3.12) attacks.
* :mod:`~negotiation.attacks.agent`: :class:`~negotiation.attacks.agent.AttackAgent`, the attacker in the
  dialogue loop (fixed-turn reactive/preemptive, Algorithm 7's RA+PA+DA and RA+PA+TA, transfer).
* :mod:`~negotiation.attacks.transfer`: the transfer attack's sentence pool (3.2.2.2).
* :mod:`~negotiation.attacks.run`: running an attack over many scenarios (resumable JSONL) and its metrics.

The black-box RL attacker (3.2.2.1) is REINFORCE with ``ReinforceConfig(reward="advantage",
complement=True)`` (:func:`negotiation.training.reinforce.train_rl`); adversarial training (3.2.4) is
:mod:`negotiation.training.adversarial`.
"""
