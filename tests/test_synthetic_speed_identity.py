"""The synthetic world's bytes are frozen: golden hashes of its pixels, classes, failures and metadata.

The hashes below were computed with the provider as it was before its rendering was
optimised (``python tests/test_synthetic_speed_identity.py`` prints them); any change
to a single bit of any pixel, land-cover class, failure decision or metadata entry
of these windows fails the test.  The windows cover both hemispheres, the equator,
the snow line (> 60 degrees north and south), every S2 band (and aliases, B10), the
Sentinel-1 and MODIS sensors, the composed MOD021KM proxy, clouds over single and
composite scenes, time series, windows straddling the lattice origin and noise cells,
1-pixel and non-square windows, fine and coarse scales, and another world seed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import date
from typing import Any

import numpy as np
import pytest

from rs_embed_dask import BBox, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_dask.core.errors import ProviderError
from rs_embed_dask.geometry import GridWindow, grid_window
from rs_embed_dask.providers.synthetic import SyntheticProvider

S2 = "COPERNICUS/S2_SR_HARMONIZED"
S1 = "COPERNICUS/S1_GRD"
ALL12 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
S2_4 = ("B2", "B3", "B4", "B8")
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")
WINTER = TemporalSpec.range("2021-12-01", "2022-03-01")
SCENE = TemporalSpec.range("2022-07-01", "2022-07-04")  # a single scene: clouds at full fraction

# id -> (provider options, spatial, temporal, sensor, n_frames)
FETCHES: dict[str, tuple[dict[str, Any], Any, TemporalSpec | None, SensorSpec, int | None]] = {
    "bench-roi": ({}, PointBuffer(10.0, 45.0, 640), SUMMER, SensorSpec(S2, S2_4), None),
    "bench-roi-far": ({}, PointBuffer(13.98, 45.02, 640), SUMMER, SensorSpec(S2, S2_4), None),
    "north-all12": ({}, PointBuffer(121.5, 31.2, 640), SUMMER, SensorSpec(S2, ALL12), None),
    "snow-north": ({}, PointBuffer(20.0, 70.0, 3000), WINTER, SensorSpec(S2, ALL12, scale_m=30), None),
    "snowline-edge": ({}, PointBuffer(25.0, 60.05, 8000), SUMMER, SensorSpec(S2, S2_4, scale_m=60), None),
    "snow-south": ({}, PointBuffer(-65.0, -66.0, 5000), SUMMER, SensorSpec(S2, ALL12, scale_m=20), None),
    "south-aliases": (
        {}, PointBuffer(18.4, -33.9, 1500), WINTER,
        SensorSpec(S2, ("RED", "NIR", "SWIR1", "B10", "RE1", "NIR_NARROW", "blue")), None,
    ),
    "equator": ({}, PointBuffer(30.0, 0.0, 2000), SUMMER, SensorSpec(S2, ALL12, scale_m=20), None),
    "origin": ({}, PointBuffer(0.0, 0.0, 900), SUMMER, SensorSpec(S2, S2_4), None),
    "west-meridian": ({}, BBox(-0.02, 51.49, 0.015, 51.5), SUMMER, SensorSpec(S2, S2_4), None),
    "non-square": ({}, BBox(-60.3, -12.01, -60.1, -12.0), SUMMER, SensorSpec(S2, S2_4, scale_m=30), None),
    "tiny": ({}, PointBuffer(7.3, 46.1, 4), SUMMER, SensorSpec(S2, ALL12), None),
    "no-dates": ({}, PointBuffer(-100.0, 40.0, 640), None, SensorSpec(S2, S2_4), None),
    "coarse-100m": ({}, PointBuffer(10.0, 45.0, 20_000), SUMMER, SensorSpec(S2, ("B4", "B8"), scale_m=100), None),
    "coarse-1km": ({}, PointBuffer(-3.0, 40.0, 100_000), SUMMER, SensorSpec(S2, S2_4, scale_m=1000), None),
    "seed-7": ({"seed": 7}, PointBuffer(10.0, 45.0, 640), SUMMER, SensorSpec(S2, ALL12), None),
    "seed-neg": ({"seed": -3}, PointBuffer(140.0, -20.0, 640), SUMMER, SensorSpec(S2, S2_4), None),
    "cloud-scene": ({"cloud_fraction": 0.4}, PointBuffer(121.5, 31.2, 3000), SCENE, SensorSpec(S2, ALL12, scale_m=30), None),
    "cloud-composite": ({"cloud_fraction": 0.5}, PointBuffer(121.5, 31.2, 3000), SUMMER, SensorSpec(S2, S2_4, scale_m=30), None),
    "cloud-overcast": ({"cloud_fraction": 1.0}, PointBuffer(10.0, 45.0, 640), SCENE, SensorSpec(S2, S2_4), None),
    "cloud-no-dates": ({"cloud_fraction": 0.5}, PointBuffer(10.0, 45.0, 640), None, SensorSpec(S2, S2_4), None),
    "cloud-south-snow": (
        {"cloud_fraction": 0.3, "seed": 2}, PointBuffer(-70.0, -64.0, 4000),
        TemporalSpec.range("2022-01-10", "2022-01-21"), SensorSpec(S2, ALL12, scale_m=40), None,
    ),
    "series-3": ({"cloud_fraction": 0.3}, PointBuffer(10.0, 45.0, 640), SUMMER, SensorSpec(S2, S2_4), 3),
    "series-12-south": ({}, PointBuffer(150.0, -30.0, 500), TemporalSpec.range("2022-01-01", "2023-01-01"), SensorSpec(S2, ("B4", "B8")), 12),
    "s1-linear": ({}, PointBuffer(10.0, 45.0, 640), SUMMER, SensorSpec(S1, ("VV", "VH")), None),
    "s1-db-snow": ({}, PointBuffer(20.0, 70.0, 2000), SUMMER, SensorSpec(S1, ("VH",), scale_m=20, use_float_linear=False), None),
    "modis-refl": ({}, PointBuffer(10.0, 45.0, 20_000), SUMMER, SensorSpec("MODIS/061/MOD09GA", ("sur_refl_b01", "sur_refl_b02", "sur_refl_b07"), scale_m=500), None),
    "modis-lst": ({}, PointBuffer(-60.0, -35.0, 30_000), WINTER, SensorSpec("MODIS/061/MOD21A1D", ("LST_1KM",), scale_m=1000), None),
    "modis-lst-nodates": ({}, PointBuffer(25.0, 65.0, 30_000), None, SensorSpec("MODIS/061/MOD21A1D", ("LST_1KM",), scale_m=1000), None),
    "mod021km-proxy": (
        {"cloud_fraction": 0.2}, PointBuffer(100.0, 15.0, 20_000), SCENE,
        SensorSpec("MODIS/061/MOD021KM", ("1", "2", "3", "26", "6", "7", "20", "31"), scale_m=1000), None,
    ),
}  # fmt: skip

# id -> (provider options, window, dates, sensor): windows given directly, including degenerate shapes
WINDOWS: dict[str, tuple[dict[str, Any], GridWindow, tuple[date, date] | None, SensorSpec]] = {
    "one-pixel": ({}, GridWindow(100_000, -500_000, 1, 1, 10.0), (date(2022, 6, 1), date(2022, 9, 1)), SensorSpec(S2, ALL12)),
    "one-pixel-snow": ({"cloud_fraction": 0.5}, GridWindow(3, -1_100_000, 1, 1, 10.0), (date(2022, 7, 1), date(2022, 7, 4)), SensorSpec(S2, S2_4)),
    "one-row": ({}, GridWindow(-37, 12_345, 97, 1, 10.0), (date(2022, 6, 1), date(2022, 9, 1)), SensorSpec(S2, S2_4)),
    "one-column": ({}, GridWindow(512, -3, 1, 83, 10.0), None, SensorSpec(S2, ("B8",))),
    "lattice-straddle": ({}, GridWindow(-4, -4, 8, 8, 10.0), (date(2022, 1, 1), date(2022, 2, 1)), SensorSpec(S2, ALL12)),
    "cell-straddle": ({}, GridWindow(595, -2_000_003, 13, 7, 10.0), (date(2022, 6, 1), date(2022, 9, 1)), SensorSpec(S2, S2_4)),
    "fine-2.5m": ({}, GridWindow(1_000_001, -2_000_017, 31, 17, 2.5), (date(2022, 6, 1), date(2022, 9, 1)), SensorSpec(S2, S2_4)),
    "s1-straddle": ({}, GridWindow(-20, -10, 40, 25, 10.0), None, SensorSpec(S1, ("VH", "VV"))),
    "modis-both": ({}, GridWindow(-3000, -7000, 19, 23, 1000.0), (date(2022, 4, 1), date(2022, 5, 1)), SensorSpec("MODIS/061/MOD09GA", ("sur_refl_b03", "sur_refl_b06"), scale_m=1000)),
}  # fmt: skip

GOLDEN: dict[str, str] = {
    "failures": "4575c0f61edfb7fd1ec08e8a169395960482f527ced5a60cd3cd6bb4878dc3f0",
    "fetch/bench-roi": (
        "(4, 128, 128)|0bfe7397a107b03f94a13a5e9a9a10bd62c2be44c906e7e0bac312790c4b2eec"
        "|(128, 128)|746664dba900c81ef311c8456e15b02a5efeee3736a4f3827ce1eb1e0c24d8da"
        "|dab943da9656842b07c0db82afbf7ed9da69976e432091e32cb9761014b0e614"
    ),
    "fetch/bench-roi-far": (
        "(4, 128, 128)|9a749b873e75bf6121f9407d427aadc302bad2f8e1651e8b3420d894390cf5ce"
        "|(128, 128)|746664dba900c81ef311c8456e15b02a5efeee3736a4f3827ce1eb1e0c24d8da"
        "|9dd35e6e27b740b56a99cab1997ab74dfe1d5dfa023b725b06118f8804d58f9b"
    ),
    "fetch/cloud-composite": (
        "(4, 200, 200)|80f46f462edb4821f98c035885f8d828da56f9faf46a967dd3fbfbb88e86669d"
        "|(200, 200)|46a88801912f6c72672cd6bd9682f1eb22726aa30af5f7cfaf7cf5028292acb0"
        "|90ed050d227e4fa596c21d6d7be5968980d5cefc9a84e75250f81edbf3708ec4"
    ),
    "fetch/cloud-no-dates": (
        "(4, 128, 128)|ff373dbfa10a8790e528f4f464d73f635f204b8b6208cf23ee20806fd5e91dec"
        "|(128, 128)|746664dba900c81ef311c8456e15b02a5efeee3736a4f3827ce1eb1e0c24d8da"
        "|f008afe48db9b488f20ed0c2cc326f67d259437d07356d3f83f6dd8089e10a2b"
    ),
    "fetch/cloud-overcast": (
        "(4, 128, 128)|204119a2f62cd781db7af6903ee44869658a4d3440a9c7d5d9045a5a16363902"
        "|(128, 128)|746664dba900c81ef311c8456e15b02a5efeee3736a4f3827ce1eb1e0c24d8da"
        "|15b5fd5dbc88f42a7ed1f8ed7a401643aa1f3cc6f8bee7453e227364a36a3af2"
    ),
    "fetch/cloud-scene": (
        "(12, 200, 200)|1adc483edfb730754fe09ca21704adafb6568063e40d7b2bac87292709ee6a1f"
        "|(200, 200)|46a88801912f6c72672cd6bd9682f1eb22726aa30af5f7cfaf7cf5028292acb0"
        "|9fe0f3a3eb71d56b98c4d07376beb28782db6a0bdcc8d332247cfceb614f2b30"
    ),
    "fetch/cloud-south-snow": (
        "(12, 200, 200)|a5fd6519a5521a2e5351e3c1d4e5b164568ecd2dfc3f746f58532176aaf612c3"
        "|(200, 200)|2953021e6ffd19949ff80d07fc20363e0c532868a9cd2ccb6d085cbfbfcd9dff"
        "|31e9be50663cc9c6325cd425390021989d7d44583e931ee46423b7b9f4004547"
    ),
    "fetch/coarse-100m": (
        "(2, 400, 400)|6c49b4e7683901f5346135cf827004d4e37985b6227e19cc4a627af042a60d46"
        "|(400, 400)|cb99b7795f297a5f481ab27575c0c397f71bb0e42fbdda57ef08c6681c9e803d"
        "|b4930a62cc10317549d91f6dffa65931c1bca70957c71c84e32a011ff9386827"
    ),
    "fetch/coarse-1km": (
        "(4, 200, 200)|c4b9370eeaa1a27660dc03645c283f57bea96b4669711e643d98a804d23bedf9"
        "|(200, 200)|5eccf42bcea297505616d2dc22a5fe0ded2a395b995b2ab4842766a434841d32"
        "|5502fd6dac5c5c4633ca9db5176001a4f55ea15a775fb355b154621c8eb306cf"
    ),
    "fetch/equator": (
        "(12, 200, 200)|ec509a5dfa4604fc8b4a4c835342ae1790a16a5d0dee797a74869441528d6422"
        "|(200, 200)|c7d8380e331229d62f30316bacf4230628785e857c6addcbead51d1ceb77b084"
        "|469b741b749b4f73af5c5253d5d1d2d66b9dbb0479ae3913e5119c9b150ed741"
    ),
    "fetch/mod021km-proxy": (
        "(8, 40, 40)|571912efedd911b85ff6e7615e6923f2b0c93cb5036ef4b7a09ed7b6eb9b66b8"
        "|(40, 40)|287f37aad1438c0452fc1a9cb7ba408a6207ea9f16f2741836a65f40bda1ea9c"
        "|f61fde080ff2daa8ffc4460da2f19f3f987bda48a2cab182c58be32872377ac6"
    ),
    "fetch/modis-lst": (
        "(1, 60, 60)|f70c1f9c4615d4082c70e59d25012d8f4d38c2d5e28a531fb38680e95926fde9"
        "|(60, 60)|a1c21fd638cd8be058ca97338ea37034653a43e7be022a2084f84f7a8829e80f"
        "|bb5b0396cb1f921ead918b376c84f7a166174344e8f9807344453e3a653cdf6a"
    ),
    "fetch/modis-lst-nodates": (
        "(1, 60, 60)|8720724d04d00fc3df585948d0e57d74e0f28e80575763ac2b606fe49bc5859a"
        "|(60, 60)|d9733e44dfba5928ea2fbecd589a8e5acb108aa76da481448959c6758e92308a"
        "|b2ae4d8e5729278e5c552c2214a26454e61a9b4a6da115dc4252107ef4d0d7dd"
    ),
    "fetch/modis-refl": (
        "(3, 80, 80)|f2555bc8db219b77e87278e153ed275f51aa40a239747ba0f326aa57e964e13b"
        "|(80, 80)|57e47594cbb58d209e56437d9ecafd7ec759722423d2e95213637120a094eaae"
        "|475c5619eb3dd3c6231055d72dca83543217b353506e06d032ff83677c3e3719"
    ),
    "fetch/no-dates": (
        "(4, 128, 128)|a603d62a16551d8160de94e1ed575f2263788f43799575ede9167e7b97d74c30"
        "|(128, 128)|f07ca583bf3bc97f1775d8742c539f65b44a00388f43db717861739a1fd6ed49"
        "|a6f4f1158377881eeaa1ed0abef06448d7cfd5639711e8385ddf1d5a9679ff70"
    ),
    "fetch/non-square": (
        "(4, 38, 742)|2507894bd68ea961b187d726a232f912bac086da237cfc8ca99b129c24bc243b"
        "|(38, 742)|a8e66a29a07c655ddc6f9898d6c800a477ac34675a7de90816eb1624997b8aa6"
        "|189f02e6cd8499370efd8b840c3fb9b2c32545ed707a41e5316df22b6f30d882"
    ),
    "fetch/north-all12": (
        "(12, 128, 128)|f5488392386ffdcc56fe96b105ac662bd92c1007e60cf26e89d23c8c38c2af9c"
        "|(128, 128)|d0f10d6adf71b4905c37624eca7c8dcf78eef73707b1bd1fd27dd135569eee1a"
        "|a70fd70467cebb6a411ba4261e455dcfcf0bf6c344ba5d739c6296e323f855e6"
    ),
    "fetch/origin": (
        "(4, 180, 180)|eb2f7402e6a246d09879735cbbf01bd1c81c2b2a91d63f4506b4a3e25b41d785"
        "|(180, 180)|4ed3cb967aea5234d12683b7a7c1605fb618de88acb36a411bb41bb94963aa36"
        "|afae4ffe285a92196356c674fb66f04c924dff47a50097f66f2e0c292c07aea2"
    ),
    "fetch/s1-db-snow": (
        "(1, 200, 200)|e7bf7ac1618300e991384d9ff0fbb98e1e5ba89836f01a8b7c9fb247da4bb202"
        "|(200, 200)|ece966117beea52469e65291481089b2985cbdf4afc13191a13f363c9b5ff603"
        "|2c1ba3767130c7fb0b46e87d4526ac62e2a39a18236c544c53404ab0154cf90a"
    ),
    "fetch/s1-linear": (
        "(2, 128, 128)|925da8dddc6e60b2a9d846908f2458b1e31a5fef25e921c21b172411a32fb978"
        "|(128, 128)|746664dba900c81ef311c8456e15b02a5efeee3736a4f3827ce1eb1e0c24d8da"
        "|6dbc60cc70166bb1fd36a11b1318d64ad7304a2c5db1de0a9b3e0f194dfc3867"
    ),
    "fetch/seed-7": (
        "(12, 128, 128)|cb630541e211b38431ce95acc07576e2944394dfb840430a49e9529571ad1091"
        "|(128, 128)|c28fc282563a59741972cb0c819d26e09e10c908fca6539af424d8c2ba6e7b3b"
        "|0c567f9a0e0136f87ec86e2d7126ba77056897f3ddb4eedbc48593e28cde0491"
    ),
    "fetch/seed-neg": (
        "(4, 128, 128)|446394ff6051ef18da2ed9ca226ff78c87f8652c3ff444564369b84f18d747e6"
        "|(128, 128)|f3eda0486e846a56612415d4704a684f67e90e22470aded7540c1ab651eb177c"
        "|ae8785f6353c269f6a9b762308b68e0577b4defae4b5354a9b5c4fbab1095253"
    ),
    "fetch/series-12-south": (
        "(12, 2, 100, 100)|5efddf0a40e9f8237be82e83590d785f36f9d564876ef714501cb73682bf9b59"
        "|(100, 100)|70b9334cfc45695ab3356190024f966cc7900104f16ba672359fd0ed619dd6c7"
        "|23d6c7eedb47aee0251c866c71111372e1762a0c6036174292a530ac59bfc263"
    ),
    "fetch/series-3": (
        "(3, 4, 128, 128)|01b27ed11e84adebacf84b7bff518e476745f175d3a4d5a05bca9e1e9db19f95"
        "|(128, 128)|746664dba900c81ef311c8456e15b02a5efeee3736a4f3827ce1eb1e0c24d8da"
        "|50a3fb6823389636523ac286386e36cd4d83e26a6e6789c76d0b96b67f043348"
    ),
    "fetch/snow-north": (
        "(12, 200, 200)|f257d04dd3fe994b4969c93c0e6d97dfc41e739e798c66014c0e6ad0a2383351"
        "|(200, 200)|7fb844a501558d7822fc1f0e7e95d75a54ce4fdc912f2ccb5e5c13e71184df2a"
        "|b41bb4f58cedf583cb18deb5d4d6334b3759df205b95502bd21abc5a9de93925"
    ),
    "fetch/snow-south": (
        "(12, 500, 500)|eda857f1ba0edd1f8e29d65b92eff07064dee20dfdcb1bda209abecde2da3dac"
        "|(500, 500)|48da21647c82269baed75fa09190e3b4d5f76daf1c1ef0405686addbd3c5b321"
        "|ddc6679e9ed911d27c1bcb191746e9d5f4cf911f5feb518105e002f78ee4ec1a"
    ),
    "fetch/snowline-edge": (
        "(4, 267, 266)|b8358394541ce01add297ac743c49814fb4785331e053bc8a7dfcf12e11a6746"
        "|(267, 266)|08c69c870bfba53111438f814878007c56da2b7b49f1696c733862a9c7f46ccf"
        "|aaa430413b75156d755a871f9dc2ae86cc702710e7e063baf6de5dd35be1468c"
    ),
    "fetch/south-aliases": (
        "(7, 300, 300)|928457d4ec5f7c099e7aa151b7436e69e374eb3677def5fd92ec95371d72ef9f"
        "|(300, 300)|bc7eac80daac33be961343026c10f48bdf3513c77cdef65dab48fc6af26c89ba"
        "|9a5b20a3c510314c5be54e0b969b40345a4fe2b1051baf95cf6e6cfbcb80047e"
    ),
    "fetch/tiny": (
        "(12, 1, 1)|ef3d17a4dfc2d1ba6a8a029df3d2b2298a66c2b2926f4ec6e08ac64d65b10562"
        "|(1, 1)|dbc1b4c900ffe48d575b5da5c638040125f65db0fe3e24494b76ea986457d986"
        "|20a2f44cedbcd75ee900ef626361affb7ac4c6fddeb51d5e6140d95293c996a8"
    ),
    "fetch/west-meridian": (
        "(4, 179, 390)|dc6ebdb937163b87caa16a1983e4f38bd612d94da0b0e94a896829c2de3be6d4"
        "|(179, 390)|f063da12dff1642f3c0223fdcb077a8e65256219e28ec33b49eb89e2126dc155"
        "|7552ea1bee7628432bb750e6bb7e2963eee1c5434ecd2afe699cd80c7139699e"
    ),
    "window/cell-straddle": (
        "(4, 7, 13)|693122afb62efea58480ec3fbc4cf889bea50c685b5391a73b7f5936aa6e8653"
        "|(7, 13)|22c13915d6ed3459ccc6b865823e1fa15bdf4dcf68e43cb64dc2f5f6cc7d7146"
        "|d7a5c30fb4bdb7be6c32d780006ee0498b03eb42e2f243640ce8b1a4d7f862a9"
    ),
    "window/fine-2.5m": (
        "(4, 17, 31)|f830df5f2d61589c88a4d7e28be130d856d200578a71de0ee60e343afa2fef86"
        "|(17, 31)|626556e989f51709329e8f3fa7908868d5180242f184d97fabc9311f9d92d9dc"
        "|d7a5c30fb4bdb7be6c32d780006ee0498b03eb42e2f243640ce8b1a4d7f862a9"
    ),
    "window/lattice-straddle": (
        "(12, 8, 8)|eb52d78baec7f89a4b08d2b3496da0b7e14bc9c33d9e675e4b4a55f52e1b11a4"
        "|(8, 8)|f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b"
        "|74ea94d7ff0192728901cdd148c073a70c0f11b778b4fcb63eeff848cb6a63aa"
    ),
    "window/modis-both": (
        "(2, 23, 19)|2ce667a3badf8e14d9b1183d42ff86a98385b81ea2278ac5985d9ed46511c175"
        "|(23, 19)|0d512199c8a238baa71788558ad0a59086dae8ffaa3aafe977c12b98811739e3"
        "|aafcff63f50e9f2ab804ddced41bc64138455ea70490ffd32a191ceafcd4f833"
    ),
    "window/one-column": (
        "(1, 83, 1)|6c3855540594da780ca5281a6ee2d110380d6fe790da8fcdb03a0e1417b680a8"
        "|(83, 1)|33bfdcb5acb36679032f2ae0af3eaf918815dc7bad47d89d1599865c92dd6123"
        "|95d0e73199b3ad62935d2300bb10a12e0c8b83e556a66dd69c7e1f3ff4939d77"
    ),
    "window/one-pixel": (
        "(12, 1, 1)|afff7c0aea0b3b32a013fc9f6bdb799dfb77f4e90c329129f0f5b3ca1bd1b744"
        "|(1, 1)|4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a"
        "|d7a5c30fb4bdb7be6c32d780006ee0498b03eb42e2f243640ce8b1a4d7f862a9"
    ),
    "window/one-pixel-snow": (
        "(4, 1, 1)|0a9323a462451ebbd4a51d5085f6677f648335ed35aab43edc9f1ad59ffc98bf"
        "|(1, 1)|67586e98fad27da0b9968bc039a1ef34c939b9b8e523a8bef89d478608c5ecf6"
        "|ad54f30c1423168793c4480d1b27efa8d8157530fdc51d93d0e1de556e6b4154"
    ),
    "window/one-row": (
        "(4, 1, 97)|df3906cdcae8003e3b7f5c5709e6379d64ffac10c7cc97746b7a195b9324f73f"
        "|(1, 97)|b844abc48bfbc8ea40eab85040fd0a72866a9feb6d9f2c8b3368f7a5d1973b28"
        "|d7a5c30fb4bdb7be6c32d780006ee0498b03eb42e2f243640ce8b1a4d7f862a9"
    ),
    "window/s1-straddle": (
        "(2, 25, 40)|4d4a5a4cd1ce8a7ee60efa96f75520863721dd5e7a654fab40c9f0a2d9f78ce0"
        "|(25, 40)|541b3e9daa09b20bf85fa273e5cbd3e80185aa4ec298e765db87742b70138a53"
        "|95d0e73199b3ad62935d2300bb10a12e0c8b83e556a66dd69c7e1f3ff4939d77"
    ),
}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _digest_fetch(key: str) -> str:
    opts, spatial, temporal, sensor, n_frames = FETCHES[key]
    res = SyntheticProvider(**opts).fetch(spatial, temporal, sensor, n_frames=n_frames)
    assert res.data.dtype == np.float32
    assert res.data.flags.c_contiguous
    window = grid_window(spatial, sensor.scale_m)
    lc = SyntheticProvider(**opts).land_cover(window)
    assert lc.dtype == np.int8
    meta = json.dumps(res.meta, sort_keys=True, default=str)
    return "|".join(
        [
            str(res.data.shape),
            _sha(res.data.tobytes()),
            str(lc.shape),
            _sha(lc.tobytes()),
            _sha(meta.encode()),
        ]
    )


def _digest_window(key: str) -> str:
    opts, window, dates, sensor = WINDOWS[key]
    p = SyntheticProvider(**opts)
    data, meta = p.fetch_window(window, dates, sensor)
    assert data.dtype == np.float32
    lc = p.land_cover(window)
    assert lc.dtype == np.int8
    m = json.dumps(meta, sort_keys=True, default=str)
    return "|".join(
        [str(data.shape), _sha(data.tobytes()), str(lc.shape), _sha(lc.tobytes()), _sha(m.encode())]
    )


def _failures() -> str:
    """Which of 60 windows fail at failure_rate=0.5, and the message of the first failure."""
    p = SyntheticProvider(failure_rate=0.5, seed=5)
    sensor = SensorSpec(S2, S2_4, scale_m=100)
    out = []
    for i in range(60):
        try:
            p.fetch(PointBuffer(0.1 * i - 3.0, 10.0 - 0.05 * i, 200), None, sensor)
            out.append("ok")
        except ProviderError as exc:
            out.append(f"{type(exc).__name__}:{exc}")
    return _sha("\n".join(out).encode())


def _all_digests() -> dict[str, str]:
    d = {f"fetch/{k}": _digest_fetch(k) for k in FETCHES}
    d.update({f"window/{k}": _digest_window(k) for k in WINDOWS})
    d["failures"] = _failures()
    return d


@pytest.mark.parametrize("key", sorted(FETCHES))
def test_fetch_bytes_frozen(key):
    assert _digest_fetch(key) == GOLDEN[f"fetch/{key}"]


@pytest.mark.parametrize("key", sorted(WINDOWS))
def test_window_bytes_frozen(key):
    assert _digest_window(key) == GOLDEN[f"window/{key}"]


def test_failures_frozen():
    assert _failures() == GOLDEN["failures"]


def test_cases_are_varied():
    """The golden windows do exercise snow, water, clouds and every class."""
    seen: set[int] = set()
    for opts, spatial, _, sensor, _ in FETCHES.values():
        seen.update(
            np.unique(SyntheticProvider(**opts).land_cover(grid_window(spatial, sensor.scale_m))).tolist()
        )
    assert seen == set(range(7))


def test_repeat_calls_identical():
    """Whatever a provider caches between calls, a repeated or interleaved call gives the same bytes."""
    p = SyntheticProvider(cloud_fraction=0.3)
    sensor = SensorSpec(S2, ALL12)
    a = p.fetch(PointBuffer(10.0, 45.0, 640), SUMMER, sensor).data
    p.fetch(PointBuffer(-10.0, -45.0, 300), SCENE, SensorSpec(S2, ("B4",)))
    b = p.fetch(PointBuffer(10.0, 45.0, 640), SUMMER, sensor).data
    assert _sha(a.tobytes()) == _sha(b.tobytes())
    a.fill(0)  # callers may write into what they get
    c = p.fetch(PointBuffer(10.0, 45.0, 640), SUMMER, sensor).data
    assert _sha(c.tobytes()) == _sha(b.tobytes())


@pytest.mark.parametrize(
    "sensor",
    [
        SensorSpec(S2, ("B2",)),
        SensorSpec(S1, ("VV",)),
        SensorSpec("MODIS/061/MOD21A1D", ("LST_1KM",), scale_m=1000),
    ],
    ids=["s2", "s1", "modis"],
)
def test_empty_windows(sensor):
    """As before: no columns gives an empty image; no rows fails (the window has no latitude range)."""
    p = SyntheticProvider(cloud_fraction=0.5)
    dates = (date(2022, 6, 1), date(2022, 6, 4))
    data, _ = p.fetch_window(GridWindow(0, 0, 0, 5, 10.0), dates, sensor)
    assert data.shape == (1, 5, 0)
    assert data.dtype == np.float32
    assert p.land_cover(GridWindow(0, 0, 0, 5, 10.0)).shape == (5, 0)
    with pytest.raises(ValueError, match="zero-size array"):
        p.fetch_window(GridWindow(0, 0, 5, 0, 10.0), dates, sensor)
    with pytest.raises(ValueError, match="zero-size array"):
        p.land_cover(GridWindow(0, 0, 5, 0, 10.0))


# -- the world as first written: straightforward full-grid float64 noise, for random windows ---------
_M = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _ref_hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    m1, m2, m3 = _M
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint64) * m1 ^ (iy.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * m3) * m2
        h ^= h >> np.uint64(30)
        h *= m2
        h ^= h >> np.uint64(27)
        h *= m3
        h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _ref_value_noise(xs: np.ndarray, ys: np.ndarray, cell_m: float, seed: int) -> np.ndarray:
    gx, gy = xs / cell_m, ys / cell_m
    ix0, iy0 = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = gx - ix0, gy - iy0
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    x_lo, y_lo = int(ix0.min()), int(iy0.min())
    lattice = _ref_hash01(
        np.arange(x_lo, int(ix0.max()) + 2)[None, :], np.arange(y_lo, int(iy0.max()) + 2)[:, None], seed
    )
    left, right = lattice[:, ix0 - x_lo], lattice[:, ix0 - x_lo + 1]
    along_x = left + (right - left) * sx[None, :]
    a, b = along_x[iy0 - y_lo], along_x[iy0 - y_lo + 1]
    return (a + (b - a) * sy[:, None]) * 2.0 - 1.0


def _ref_fbm(xs: np.ndarray, ys: np.ndarray, cell_m: float, seed: int, octaves: int = 3) -> np.ndarray:
    total = np.zeros((ys.size, xs.size))
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * _ref_value_noise(xs, ys, cell_m / (2**o), seed + 101 * o)
        norm += amp
        amp *= 0.5
    return total / norm


def _ref_land_cover(seed: int, w: GridWindow) -> np.ndarray:
    xs, ys = w.pixel_centers()
    moist, use = _ref_fbm(xs, ys, 6000.0, seed), _ref_fbm(xs, ys, 2500.0, seed + 7)
    cls = np.full(moist.shape, 2, dtype=np.int8)
    cls[use > 0.15] = 1
    cls[moist > 0.25] = 3
    cls[use < -0.45] = 5
    cls[(use > 0.5) & (moist < 0.1)] = 4
    cls[moist < -0.45] = 0
    lats = np.degrees(2.0 * np.arctan(np.exp(ys / 6378137.0)) - np.pi / 2.0)
    if np.abs(lats).max() > 59.0:
        cls[((np.abs(lats)[:, None] + 8.0 * moist) > 68.0) & (cls != 0)] = 6
    return cls


def _ref_texture(seed: int, w: GridWindow) -> np.ndarray:
    xs, ys = w.pixel_centers()
    tex = _ref_value_noise(xs, ys, 40.0, seed + 3) * 0.04 + _ref_fbm(xs, ys, 600.0, seed + 5, 2) * 0.06
    return (1.0 + tex).astype(np.float32)


def _random_windows(n: int, seed: int) -> list[GridWindow]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scale = float(rng.choice([2.5, 10.0, 20.0, 60.0, 100.0, 250.0]))
        lat = float(rng.uniform(-75.0, 75.0))
        y = 6378137.0 * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))
        col = int(rng.integers(-2_000_000, 2_000_000) * 10.0 / scale)
        out.append(
            GridWindow(col, int(-y / scale), int(rng.integers(1, 90)), int(rng.integers(1, 90)), scale)
        )
    return out


SPECTRA_B1 = np.array([1100, 1200, 1250, 1100, 1400, 1500, 9000], dtype=np.float32)


def test_random_windows_match_reference():
    """Land cover and texture of random windows equal the straightforward computation, bit for bit."""
    for i, w in enumerate(_random_windows(40, 11)):
        seed = i % 3 - 1
        p = SyntheticProvider(seed=seed)
        np.testing.assert_array_equal(p.land_cover(w), _ref_land_cover(seed, w), err_msg=str(w))
        # a vegetation-free band with no season (B1 of water/urban/bare/snow is spectrum x texture)
        img = p.render(w, None, [0])[0]
        lc = p.land_cover(w)
        plain = np.isin(lc, [0, 4, 5, 6])
        want = np.clip(SPECTRA_B1[lc] * _ref_texture(seed, w), 0.0, 10000.0)
        np.testing.assert_array_equal(img[plain], want[plain], err_msg=str(w))


def test_noise_matches_reference():
    """The public noise helpers equal the straightforward computation, dense and sparse lattices alike."""
    from rs_embed_dask.providers import _noise

    rng = np.random.default_rng(5)
    for _ in range(30):
        scale = float(rng.choice([1.0, 10.0, 30.0, 500.0]))
        c0, r0 = int(rng.integers(-(10**6), 10**6)), int(rng.integers(-(10**6), 10**6))
        w, h = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        xs = (np.arange(c0, c0 + w) + 0.5) * scale
        ys = -(np.arange(r0, r0 + h) + 0.5) * scale
        cell = float(rng.choice([7.0, 40.0, 300.0, 2500.0, 6000.0]))
        cell = max(cell, scale * 40 / 600)  # keep the reference's whole lattice small (<= 600 cells a side)
        seed = int(rng.integers(-50, 50))
        np.testing.assert_array_equal(
            _noise.value_noise(xs, ys, cell, seed), _ref_value_noise(xs, ys, cell, seed)
        )
        np.testing.assert_array_equal(_noise.fbm(xs, ys, cell, seed), _ref_fbm(xs, ys, cell, seed))
        np.testing.assert_array_equal(_noise.fbm(xs, ys, cell, seed, 2), _ref_fbm(xs, ys, cell, seed, 2))


def test_raw_levels_are_exact():
    """Testing the undivided sum against raw_level answers exactly as testing the quotient."""
    from rs_embed_dask.providers._noise import raw_level

    rng = np.random.default_rng(3)
    for level in (-0.45, 0.1, 0.25, 0.5, 0.15):
        for norm in (1.75, 1.5):
            for above in (True, False):
                raw = raw_level(level, norm, above=above)
                near = raw + np.arange(-8, 9) * np.spacing(raw)  # the floats around the level
                t = np.concatenate([near, level * norm + rng.normal(0, 1e-12, 200), rng.uniform(-2, 2, 200)])
                want = (t / norm > level) if above else (t / norm < level)
                got = (t > raw) if above else (t < raw)
                np.testing.assert_array_equal(got, want)


def test_threads_agree():
    """Concurrent renders (each borrowing scratch buffers) give the serial bytes."""
    from concurrent.futures import ThreadPoolExecutor

    p = SyntheticProvider(cloud_fraction=0.3)
    jobs = [(w, (date(2022, 7, 1), date(2022, 7, 4)), [1, 2, 3, 7]) for w in _random_windows(24, 2)]
    serial = [p.render(*j).tobytes() for j in jobs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda j: p.render(*j).tobytes(), jobs * 3))
    assert threaded == serial * 3


if __name__ == "__main__":  # print the golden table (run with the code whose bytes are to be frozen)
    json.dump(_all_digests(), sys.stdout, indent=4, sort_keys=True)
    print()
