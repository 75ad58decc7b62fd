"""Image classifiers under attack: models and data (MNIST, CIFAR-10), hard-label, soft-label and white-box
attacks on one query-counting model interface.

- :mod:`nlprobust.vision.datasets`: MNIST / CIFAR-10 read from their files, images in [0, 1]
- :mod:`nlprobust.vision.models`: C&W CNNs, ResNet-18, VGG-16; checkpoints = state_dict + config
- :mod:`nlprobust.vision.train`: training loop (accelerate)
- :mod:`nlprobust.vision.oracle`: white-box / soft-label / hard-label views with exact query budgets
- :mod:`nlprobust.vision.attacks`: FGSM, PGD, C&W, ZOO, NES, OPT, Sign-OPT, SVM-OPT
"""
