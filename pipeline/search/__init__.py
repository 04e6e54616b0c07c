"""Search: a trained checkpoint + shards -> a video index (index), free-text queries against it
(query), and a small web page over it (web)."""
