"""The study layer: the (task, model, seed) grid of the whole paper, its shards and cells."""
