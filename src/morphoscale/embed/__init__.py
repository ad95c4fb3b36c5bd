"""`morphoscale embed`: tiled crops -> site -> well embeddings, streamed, resumable.

Each site is cut into tiles of the model's crop size (data/datasets.py: tile_origins for the
remainder policy), tiles are embedded in batches under torch.inference_mode, and the tile
embeddings are averaged to the site (and sites to the well). Work is done in chunks of
sites (chunked.py); each finished chunk is saved under `OUT.partial/`, so an interrupted run
resumes with the unfinished chunks only. The output is assembled chunk by chunk
(data/profiles.py) and renamed into place when complete.
"""

from .encode import embed, model_channels

__all__ = ["embed", "model_channels"]
