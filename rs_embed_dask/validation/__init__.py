"""Client-side checks run before a cluster starts or a byte is written.

Every public entry point (:func:`rs_embed_dask.get_embedding`,
:func:`rs_embed_dask.export_batch`, :class:`rs_embed_dask.BatchExporter`,
``rs-embed-dask export``) refuses what it can know to be wrong on the client,
with :class:`~rs_embed_dask.SpecError`, :class:`~rs_embed_dask.ModelError`
or :class:`TypeError` naming the field and the allowed values, so that no
worker (possibly behind a batch queue) ever receives work that must fail.

The checks are split by concern:

- :mod:`.args`: the type and value of every public argument;
- :mod:`.secrets`: credentials travel as paths or names, never as contents;
- :mod:`.options`: provider options against what each provider declares;
- :mod:`.rois`: every ROI's grid window (exists, no antimeridian crossing,
  within a size limit), also for ROIs streamed from a generator;
- :mod:`.models`: bands against the model and the provider's catalogue, and
  one model requested twice under two names;
- :mod:`.preflight`: the environment (target folder, device, credentials,
  weights), checked once per request.

The submodules are imported where used (this package stays import-light:
the provider base class depends on :mod:`.options`).
"""

from __future__ import annotations

__all__: list[str] = []
