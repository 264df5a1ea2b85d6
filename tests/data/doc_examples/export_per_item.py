# ruff: noqa: E402, I001  (the documentation's text, kept as written)
# rs-embed documentation: "API: Export", pattern "One file per ROI", then "API: Load",
# "Load a per-item export directory", then export_npz (its page gives only the signature:
# the call below passes the documented keywords).
# Changes: import from rs_embed_dask; models ["remoteclip", "prithvi"] -> ["rcf"] (no weights to
# download); backend="synthetic" added (the default resolves to Earth Engine for an on-the-fly
# model); load_export reads "exports/", the folder the per-item example writes (the load page's
# "exports/per_item_run/" is written by no example).
from rs_embed_dask import export_batch, ExportConfig, ExportTarget, PointBuffer, TemporalSpec

spatials = [
    PointBuffer(121.5, 31.2, 2048),
    PointBuffer(120.5, 30.2, 2048),
]

export_batch(
    spatials=spatials,
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["rcf"],
    target=ExportTarget.per_item("exports", names=["p1", "p2"]),
    config=ExportConfig(
        input_prep="tile",
        chunk_size=32,
        num_workers=8,
    ),
    backend="synthetic",
)

from rs_embed_dask import load_export

result = load_export("exports/")
print(result.layout)        # "per_item"
print(result.n_items)       # number of files found

emb = result.embedding("rcf")   # (n_items, dim) — stacked from per-file arrays
print(emb.shape)

from rs_embed_dask import export_npz

export_npz(
    spatial=PointBuffer(121.5, 31.2, 2048),
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["rcf"],
    out_path="single/one_roi",
    backend="synthetic",
)
print(load_export("single/one_roi.npz").embedding("rcf").shape)
