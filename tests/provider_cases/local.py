"""local: one EPSG:3857 GeoTIFF tile per ROI (its grid window plus 8 pixels) of the synthetic world."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rs_embed_dask.core.specs import SensorSpec


def make(request: Any, spatials: Sequence[Any]) -> tuple[dict[str, Any], SensorSpec]:
    import rasterio

    from rs_embed_dask.geometry import GridWindow, grid_window
    from rs_embed_dask.providers.synthetic import S2_BANDS, SyntheticProvider

    bands = ("B2", "B3", "B4", "B8")
    folder = request.getfixturevalue("tmp_path") / "local_contract_tiles"
    folder.mkdir(exist_ok=True)
    for i, sp in enumerate(spatials):
        w = grid_window(sp, 10)
        w = GridWindow(w.col_off - 8, w.row_off - 8, w.width + 16, w.height + 16, w.scale_m)
        data = SyntheticProvider().render(w, None, [S2_BANDS.index(b) for b in bands])
        with rasterio.open(
            folder / f"tile_{i:04d}.tif", "w", driver="GTiff", width=w.width, height=w.height,
            count=len(bands), dtype="float32", crs="EPSG:3857", transform=w.transform,
        ) as dst:  # fmt: skip
            dst.write(data)
            dst.descriptions = bands
    return {"path": str(folder)}, SensorSpec(collection="local", bands=bands)


CASES = {"local": make}
