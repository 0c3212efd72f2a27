"""The pickles of make_pickle_golden.py as NumPy 1.x writes them, as the real
ti_500K_pseudo_labeled.pickle was written: arrays reduce through numpy.core.multiarray
(NumPy 2 writes numpy._core), protocols 2 and 3.

    pip install "numpy<2"      # written with numpy 1.26.4
    python3 make_pickle_numpy1_golden.py
"""
import pickle

import numpy as np

assert np.__version__.startswith("1."), "run with NumPy 1.x"
data = ((np.arange(4 * 8 * 8 * 3) * 37 + 11) % 256).astype(np.uint8).reshape(4, 8, 8, 3)
targets = np.array([3, 1, 4, 1], dtype=np.int64)
for protocol in (2, 3):
    with open(f"pseudo_labeled_numpy1_p{protocol}.pickle", "wb") as f:
        pickle.dump(
            {"data": data, "extrapolated_targets": targets, "prediction_model": "golden"},
            f,
            protocol=protocol,
        )
