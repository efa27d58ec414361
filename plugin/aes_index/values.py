"""The values a photo manager's fields hold, as darktable, digiKam and XMP spell them.

Ratings (xmp:Rating, darktable, digiKam): 1..5 stars, 0 or absent for none, -1 for
darktable's "rejected" (digiKam has no rejected rating: it uses the pick label).
Pick labels (digiKam:PickLabel, digiKam's "Pick Label" tags): 0 none, 1 rejected,
2 pending, 3 accepted.
Our culling tags, below our tag root in every photo manager ("Aesthetic|keeper" in a
sidecar, "Aesthetic/blurry" in digiKam, "aesthetic|overexposed" in darktable).
"""

NO_RATING = 0
REJECTED = -1
NO_PICK, PICK_REJECTED, PICK_PENDING, PICK_ACCEPTED = 0, 1, 2, 3

BLURRY, OVEREXPOSED, UNDEREXPOSED = "blurry", "overexposed", "underexposed"
FLAGS = (BLURRY, OVEREXPOSED, UNDEREXPOSED)  # technical failures, in the order we name them
KEEPER = "keeper"
# A group's photo in another folder than its keeper: grouped there under the best of the
# group in that folder, never under the keeper (a photo manager shows a group where its
# leader is, so the folder would lose it); this tag links it to the keeper instead.
KEEPER_ELSEWHERE = "keeper in another folder"
CULL_TAGS = (KEEPER, KEEPER_ELSEWHERE, *FLAGS)  # our tags that culling owns (the rest are stars' and attributes')
