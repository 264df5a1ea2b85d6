"""rcf: no weights; DN / 10000 clipped to [0, 1]."""

from __future__ import annotations

import numpy as np

from model_cases import ModelCase

_RAW = np.array([-100.0, 0.0, 1.0, 2500.0, 5000.0, 9999.0, 10000.0, 12345.0], dtype=np.float32)

CASES = {
    "rcf": ModelCase(
        config={"features": 16},
        input_hw=(27, 30),
        # DN / 10000 clipped to [0, 1], the same for each of the four bands
        raw=np.tile(_RAW.reshape(1, 1, 2, 4), (1, 4, 2, 1)),
        expected=np.tile(
            np.array([0.0, 0.0, 0.0001, 0.25, 0.5, 0.9999, 1.0, 1.0], np.float32).reshape(1, 1, 2, 4),
            (1, 4, 2, 1),
        ),
        exact_pooling=[
            ({"features": 16, "grid_stride": 1}, (20, 23)),
            ({"features": 16, "grid_stride": 8}, (34, 34)),  # 32 x 32 maps, 8 x 8 cells
            ({"features": 16, "grid_stride": 4, "kernel_size": 5}, (28, 20)),  # 24 x 16 maps
        ],
    ),
}
