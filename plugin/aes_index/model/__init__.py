"""The model: the open_clip backbone (`backbone`), heads over its embeddings (`heads`) and
the paper's zero-shot prompt heads (`zeroshot`)."""
