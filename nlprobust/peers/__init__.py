"""Peer libraries run against our victims, each adapted in its own module and imported on first use.

- :mod:`nlprobust.peers.textattack`: TextAttack's black-box ``seq2sick`` recipe (its own venv: ``make peers``)
"""
