"""Shared by every domain (text, vision, negotiation); imports nothing domain-specific of the project.

:mod:`nlprobust.core.runio`: JSON-lines logs, atomic files and checkpoints, RNG state and seeds, run folders.
:mod:`nlprobust.core.runner`: the resumable runner, sharded across processes by rank.
"""
