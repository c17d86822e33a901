"""The training stages' names, in training order (a light module: ``dvis -h`` imports it)."""

STAGES = ("segmenter", "tracker", "refiner")
