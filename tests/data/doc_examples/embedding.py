# ruff: noqa: E402, I001  (the documentation's text, kept as written)
# rs-embed documentation, "API: Embedding": the get_embedding and get_embeddings_batch examples.
# Changes: import from rs_embed_dask; model "remoteclip" -> "rcf" (no weights to download);
# backend="gee" -> "synthetic", and backend="synthetic" where the example relies on the default
# (which resolves to Earth Engine for an on-the-fly model).
from rs_embed_dask import PointBuffer, TemporalSpec, OutputSpec, get_embedding

emb = get_embedding(
    "rcf",
    spatial=PointBuffer(lon=121.5, lat=31.2, buffer_m=2048),
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    output=OutputSpec.pooled(pooling="mean"),
    backend="synthetic",
    device="auto",
    input_prep="resize",  # default
)
vec = emb.data  # (D,)

from rs_embed_dask import PointBuffer, TemporalSpec, get_embeddings_batch

spatials = [
    PointBuffer(121.5, 31.2, 2048),
    PointBuffer(120.5, 30.2, 2048),
]
embs = get_embeddings_batch(
    "rcf",
    spatials=spatials,
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    backend="synthetic",
)

# added for the test: what the examples computed
print("get_embedding", vec.shape)
print("get_embeddings_batch", len(embs), embs[0].data.shape)
