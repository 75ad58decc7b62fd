"""What the recipes share: experiment set-ups on top of the library (the recipes are thin scripts over these).

- :mod:`nlprobust.experiments.multi30k`: the Multi30k victims (trained when missing), their test BLEU, the
  keyword pool and the seeded sentence and keyword draws
- :mod:`nlprobust.experiments.summarization`: the Gigaword summarization victims, their ROUGE, the test sets
  (Gigaword, DUC2003, DUC2004) and the keyword pool
- :mod:`nlprobust.experiments.tables`: attack table rows (success, size, quality, cost), resumable attack runs,
  the configurations of each row and the selection of tuned settings
- :mod:`nlprobust.experiments.peer`: our attacks beside a peer library's on the same sentences
- :mod:`nlprobust.experiments.report`: the project's results document (``recipes/results`` into
  ``docs/RESULTS.md``)
"""
