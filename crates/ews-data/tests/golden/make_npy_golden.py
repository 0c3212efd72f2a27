"""Small .npy files written by NumPy, for the reader's tests.

    pip install numpy
    python3 make_npy_golden.py
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
images = (np.arange(2 * 2 * 3 * 3) * 7 % 256).astype(np.uint8).reshape(2, 2, 3, 3)
np.save(os.path.join(HERE, "images_u8.npy"), images)
np.save(os.path.join(HERE, "labels_i64.npy"), np.array([3, 9], dtype=np.int64))
np.save(os.path.join(HERE, "labels_u8.npy"), np.array([3, 9], dtype=np.uint8))
np.save(os.path.join(HERE, "floats.npy"), np.zeros((2, 2), dtype=np.float32))
