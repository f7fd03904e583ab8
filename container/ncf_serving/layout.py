"""The serving bundle's file names (standard library only: the serve entry reads ``serving.json``
before numpy is imported, see :mod:`ncf_serving.cli`). The format itself is in :mod:`ncf_serving.bundle`."""

FORMAT = 2
SERVING_JSON = "serving.json"
FASTPATH_DIR = "fastpath"
SEEN_DIR = "seen_items"
IDS_DIR = "ids"
ANN_INDEX = "retrieval.faiss"
