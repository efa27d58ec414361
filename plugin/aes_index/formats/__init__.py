"""Byte-level editors of the files photo managers read: XMP sidecars (`xmp`) and the EXIF
rating inside JPEGs (`exif_rating`). Only our fields change; every other byte survives."""
