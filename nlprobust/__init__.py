"""nlprobust: measure and improve the adversarial robustness of NLP models.

Implements the methods of M. Cheng, *On the Robustness of Neural Network: Attacks and Defenses*:
Seq2Sick (``nlprobust.attacks``), AdvAgent (the ``negotiation`` package) and the vision attacks and
defenses (``nlprobust.vision``).
"""

__version__ = "0.1.0"
