"""What a person asks for, one module (or package) each: star ratings (`rating`, the
policy in `stars`), culling, attributes, darktable's plugin protocol, digiKam, the gallery
(`report`), the background indexer (`watch`), `doctor`. Each owns its operations; writes
go through `writing`, whose decisions ask `ownership`."""
