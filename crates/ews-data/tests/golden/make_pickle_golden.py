"""Small pickles in the layout of Carmon et al.'s ti_500K_pseudo_labeled.pickle.

data: uint8 (4, 8, 8, 3) with value (i * 37 + 11) % 256 at flat index i;
extrapolated_targets: int64 [3, 1, 4, 1]; plus a string entry as the real file has.
Run: python3 make_pickle_golden.py (numpy 2.x; protocols 2, 4 and 5).
"""
import pickle

import numpy as np

data = ((np.arange(4 * 8 * 8 * 3) * 37 + 11) % 256).astype(np.uint8).reshape(4, 8, 8, 3)
targets = np.array([3, 1, 4, 1], dtype=np.int64)
for protocol in (2, 4, 5):
    with open(f"pseudo_labeled_p{protocol}.pickle", "wb") as f:
        pickle.dump(
            {"data": data, "extrapolated_targets": targets, "prediction_model": "golden"},
            f,
            protocol=protocol,
        )

# A 16 px set for training tests that mix extra data into every batch.
rng = np.random.default_rng(0)
extra = rng.integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)
extra_targets = rng.integers(0, 10, size=24).astype(np.int64)
with open("pseudo_labeled_16px.pickle", "wb") as f:
    pickle.dump({"data": extra, "extrapolated_targets": extra_targets}, f, protocol=4)
