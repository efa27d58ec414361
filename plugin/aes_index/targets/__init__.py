"""Rating targets: where a photo manager reads a photo's stars, behind one protocol.

    protocol.py  Place, Reading, Wanted, Target: read -> decide -> write -> journal -> undo
    apply.py     the one apply loop and the one undo loop every command runs
    sidecar.py   XMP sidecars ("xmp"; the byte-level editor is aes_index.formats.xmp)
    exif.py      EXIF Rating in JPEG originals ("exif"; editor: aes_index.formats.exif_rating)
    darktable.py darktable's library through the Lua plugin ("darktable")
    digikam.py   digiKam's database ("digikam")

The rule that decides (manual ratings win, treat-as-unrated) is ratings.decide(), used by
apply.py only; the journal is the store's (aes_index.index.store.journal).
"""
