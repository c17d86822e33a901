"""DVIS: Decoupled Video Instance Segmentation (ICCV 2023).

Three stages, each frozen while the next trains: a per-frame segmenter (Mask2Former), an online
referring tracker and an offline temporal refiner. See ``docs/`` and ``SPEC`` for details.
"""

__version__ = "0.1.0"
