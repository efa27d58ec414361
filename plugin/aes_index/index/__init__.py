"""Indexing: finding the library's photos (`library`), decoding them (`decode`, with the
capture facts of `facts`), embedding them in worker processes (`pipeline`), the one stage
runner every caller uses (`runner`), the locks beside the index (`locks`) and the index
database itself (`store`)."""
