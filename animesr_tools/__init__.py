"""Tools around vsanimesr that upscaling does not need: quality metrics, evaluation, peer models, benchmark parts.

Installed beside ``vsanimesr`` (``pip install .``) so that scripts, training and notebooks import them by name; the
runtime package never imports this one.
"""
