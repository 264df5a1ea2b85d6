"""Differential harness: our embeddings against rs-embed 0.3.1's for the same weights and pixels.

Run it with ``make parity`` (see ``parity/README.md``).  The harness is not
part of the test suite: it needs a second virtual environment holding
rs-embed (``.venv-parity``) and several gigabytes of random checkpoints.

Modules
-------
inputs
    The ROI plan and the deterministic Sentinel-2-like pixels both sides' fake
    providers serve (numpy only, importable in both environments).
weights
    Seeded random weights, the Hugging Face hub cache layout and the tensor
    conversions between the checkpoint formats the two packages read.
capture
    A global forward pre-hook recording what each side hands its model's
    patch embedding.
compare
    The comparison of the two sides' outputs and the ``docs/parity.md`` report.
sides.rsembed_side, sides.ours_side
    The two processes, one per environment.
run
    The orchestrator behind ``make parity``.
"""
