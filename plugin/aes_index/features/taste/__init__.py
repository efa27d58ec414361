"""Your taste: a personal head learned from the decisions a person already makes in their
photo manager (`aes-index learn`): sources.py finds them (read-only, ownership.py says
whose), model.py turns them into data, fits over cached embeddings and measures against
the active head, learn.py saves, adopts or not, and undoes."""
