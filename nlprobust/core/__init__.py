"""Shared by every domain (text, vision, negotiation); imports nothing domain-specific of the project.

:mod:`nlprobust.core.runio`: JSON-lines logs, atomic files and checkpoints, RNG state and seeds, run folders.
:mod:`nlprobust.core.runner`: the resumable runner, sharded across processes by rank.
:mod:`nlprobust.core.results`: results files and their markdown rendering (the generic results document).
:mod:`nlprobust.core.cli`: command-line helpers of the scripts (scales, list and count options).
"""
