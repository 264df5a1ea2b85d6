"""The two sides of the comparison, each run as a process in its own environment.

:mod:`parity.sides.rsembed_side` runs in ``.venv-parity`` (rs-embed 0.3.1 and
its dependencies: timm<=1.0.15, rshf, open_clip 2.x, transformers 5) and
:mod:`parity.sides.ours_side` in the project's ``.venv``.  They share only
:mod:`parity.inputs`, :mod:`parity.capture` and :mod:`parity.weights` and
exchange arrays through ``.npz`` files, so neither package's dependency pins
constrain the other's.
"""
