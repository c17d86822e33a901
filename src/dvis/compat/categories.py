"""Category tables of the datasets the public DVIS release trains on (OVIS, YouTube-VIS 2019/2021,
VIPSeg), as the release's dataset metadata lists them, and VIPSeg's thing classes."""

from __future__ import annotations

from dvis.errors import ConfigError

DATASETS = ("ovis", "ytvis19", "ytvis21", "vipseg")

# VIPSeg's 124 classes: contiguous id == dataset id; these are the things (isthing = 1) in the
# release's VIPSeg metadata (dvis/data_video/datasets/vps.py); the other 66 are stuff.
VIPSEG_THING_CLASSES: tuple[int, ...] = (
    2, 4, 8, 10, 41, 43, 44, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 60, 61, 62, 63, 64, 65, 72, 74,
    76, 77, 78, 79, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 95, 96, 97, 99, 100, 101, 102, 106,
    107, 108, 109, 114, 115, 116, 117, 118, 122, 123,
)

# Category names of each dataset in class-index order, as the release's dataset metadata lists
# them (dvis/data_video/datasets/ytvis.py: OVIS_CATEGORIES, YTVIS_CATEGORIES_2019/2021; vps.py:
# VIPSeg's 124 categories). Class index k is category id k + 1 for OVIS and YouTube-VIS (ids
# 1..K) and id k for VIPSeg (ids 0..123, contiguous id == dataset id). Spellings are the
# datasets' own ("Vehical" in OVIS).
OVIS_CATEGORY_NAMES: tuple[str, ...] = (
    "Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra", "Giraffe",
    "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger", "Fish", "Turtle",
    "Bicycle", "Motorcycle", "Airplane", "Boat", "Vehical",
)
YTVIS19_CATEGORY_NAMES: tuple[str, ...] = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake", "monkey",
    "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear", "motorbike",
    "giraffe", "leopard", "fox", "deer", "owl", "surfboard", "airplane", "truck", "zebra", "tiger",
    "elephant", "snowboard", "boat", "shark", "mouse", "frog", "eagle", "earless_seal", "tennis_racket",
)
YTVIS21_CATEGORY_NAMES: tuple[str, ...] = (
    "airplane", "bear", "bird", "boat", "car", "cat", "cow", "deer", "dog", "duck", "earless_seal",
    "elephant", "fish", "flying_disc", "fox", "frog", "giant_panda", "giraffe", "horse", "leopard",
    "lizard", "monkey", "motorbike", "mouse", "parrot", "person", "rabbit", "shark", "skateboard",
    "snake", "snowboard", "squirrel", "surfboard", "tennis_racket", "tiger", "train", "truck", "turtle",
    "whale", "zebra",
)
VIPSEG_CATEGORY_NAMES: tuple[str, ...] = (
    "wall", "ceiling", "door", "stair", "ladder", "escalator", "Playground_slide", "handrail_or_fence",
    "window", "rail", "goal", "pillar", "pole", "floor", "ground", "grass", "sand", "athletic_field",
    "road", "path", "crosswalk", "building", "house", "bridge", "tower", "windmill", "well_or_well_lid",
    "other_construction", "sky", "mountain", "stone", "wood", "ice", "snowfield", "grandstand", "sea",
    "river", "lake", "waterfall", "water", "billboard_or_Bulletin_Board", "sculpture", "pipeline",
    "flag", "parasol_or_umbrella", "cushion_or_carpet", "tent", "roadblock", "car", "bus", "truck",
    "bicycle", "motorcycle", "wheeled_machine", "ship_or_boat", "raft", "airplane", "tyre",
    "traffic_light", "lamp", "person", "cat", "dog", "horse", "cattle", "other_animal", "tree",
    "flower", "other_plant", "toy", "ball_net", "backboard", "skateboard", "bat", "ball",
    "cupboard_or_showcase_or_storage_rack", "box", "traveling_case_or_trolley_case", "basket",
    "bag_or_package", "trash_can", "cage", "plate", "tub_or_bowl_or_pot", "bottle_or_cup", "barrel",
    "fishbowl", "bed", "pillow", "table_or_desk", "chair_or_seat", "bench", "sofa", "shelf", "bathtub",
    "gun", "commode", "roaster", "other_machine", "refrigerator", "washing_machine", "Microwave_oven",
    "fan", "curtain", "textiles", "clothes", "painting_or_poster", "mirror", "flower_pot_or_vase",
    "clock", "book", "tool", "blackboard", "tissue", "screen_or_television", "computer", "printer",
    "Mobile_phone", "keyboard", "other_electronic_product", "fruit", "food", "instrument", "train",
)
# dataset -> (names in class-index order, category id of class 0)
DATASET_CATEGORIES: dict[str, tuple[tuple[str, ...], int]] = {
    "ovis": (OVIS_CATEGORY_NAMES, 1),
    "ytvis19": (YTVIS19_CATEGORY_NAMES, 1),
    "ytvis21": (YTVIS21_CATEGORY_NAMES, 1),
    "vipseg": (VIPSEG_CATEGORY_NAMES, 0),
}


def dataset_categories(dataset: str) -> tuple[tuple[int, str], ...]:
    """(dataset category id, name) per class index of ``dataset`` (one of :data:`DATASETS`)."""
    if dataset not in DATASET_CATEGORIES:
        raise ConfigError(f"no categories recorded for dataset {dataset!r}; known: {', '.join(DATASETS)}")
    names, first_id = DATASET_CATEGORIES[dataset]
    return tuple((first_id + index, name) for index, name in enumerate(names))
