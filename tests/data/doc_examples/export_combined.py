# ruff: noqa: E402, I001  (the documentation's text, kept as written)
# rs-embed documentation: "API: Export", pattern "One combined export file", then the
# "API: Load" patterns that read its output (exports/combined_run.npz / .json).
# Changes: import from rs_embed_dask; models "remoteclip" / "prithvi" -> "rcf" (no weights to
# download); backend="synthetic" added (the default resolves to Earth Engine for an on-the-fly model).
from rs_embed_dask import export_batch, ExportConfig, ExportTarget, PointBuffer, TemporalSpec

export_batch(
    spatials=[PointBuffer(121.5, 31.2, 2048)],
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["rcf"],
    target=ExportTarget.combined("exports/combined_run"),
    config=ExportConfig(save_inputs=True, resume=True),
    backend="synthetic",
)

# Load and inspect a combined export
from rs_embed_dask import load_export

result = load_export("exports/combined_run.npz")

print(result.n_items)           # number of spatial points
print(result.ok_models)         # models that succeeded
print(result.temporal)          # {'start': '2022-06-01', 'end': '2022-09-01'}

emb = result.embedding("rcf")   # shape (n_items, dim)

# Access inputs when save_inputs=True
result = load_export("exports/combined_run.npz")
mr = result.models["rcf"]
if mr.inputs is not None:
    print(mr.inputs.shape)   # (n_items, C, H, W)

# Handle partial failures
result = load_export("exports/combined_run.npz")

if result.failed_models:
    print("Failed:", result.failed_models)

for name in result.ok_models:
    emb = result.embedding(name)
    print(f"{name}: {emb.shape}")

# Load via the manifest JSON
result = load_export("exports/combined_run.json")
