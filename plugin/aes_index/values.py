"""The values a photo manager's fields hold, as darktable, digiKam and XMP spell them.

Ratings (xmp:Rating, darktable, digiKam): 1..5 stars, 0 or absent for none, -1 for
darktable's "rejected" (digiKam has no rejected rating: it uses the pick label).
Pick labels (digiKam:PickLabel, digiKam's "Pick Label" tags): 0 none, 1 rejected,
2 pending, 3 accepted.
"""

NO_RATING = 0
REJECTED = -1
NO_PICK, PICK_REJECTED, PICK_PENDING, PICK_ACCEPTED = 0, 1, 2, 3
