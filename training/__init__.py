"""Training code for AnimeSR: degradation synthesis, clip datasets, learned basic operators and the trainer.

Imports from :mod:`vsanimesr` (the inference package); never the reverse.
"""
