"""The serving bundle's file names (standard library only: the serve entry reads ``serving.json``
before numpy is imported, see :mod:`ncf_serving.__main__`). The format itself is in :mod:`ncf_serving.bundle`."""

FORMAT = 1
SERVING_JSON = "serving.json"
FASTPATH_NPZ = "fastpath.npz"
SEEN_NPZ = "seen_items.npz"
IDS_NPZ = "ids.npz"
ANN_INDEX = "retrieval.faiss"
