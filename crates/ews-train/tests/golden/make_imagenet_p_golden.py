"""Golden values of ImageNet-P's metrics by the reference formulas (hendrycks/robustness
ImageNet-P/test.py: `flip_prob` and `ranking_dist(mode='top5')`, the same loops, with
SciPy's `rankdata(-frame, method='ordinal')` ranks), on seeded random logits with ties.
Writes imagenet_p_golden.json next to this script.

    pip install numpy scipy
    python3 crates/ews-train/tests/golden/make_imagenet_p_golden.py
"""

import json
import os

import numpy as np
from scipy.stats import rankdata

CLASSES = 12
CUM_SUM_TOP5 = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (CLASSES - 1 - 5)))


def dist_top5(sigma):
    return np.sum(np.abs(CUM_SUM_TOP5[:5] - CUM_SUM_TOP5[sigma - 1][:5]))


def ranking_dist(ranks, noise, difficulty):
    result = 0
    step = 1 if noise else difficulty
    for vid_ranks in ranks:
        per_video = []
        for i in range(step):
            perm1 = vid_ranks[i]
            perm1_inv = np.argsort(perm1)
            for rank in vid_ranks[i::step][1:]:
                perm2 = rank
                per_video.append(dist_top5(perm2[perm1_inv]))
                if not noise:
                    perm1 = perm2
                    perm1_inv = np.argsort(perm1)
        result += np.mean(per_video) / len(ranks)
    return result


def flip_prob(predictions, noise, difficulty):
    result = 0
    step = 1 if noise else difficulty
    for vid_preds in predictions:
        per_video = []
        for i in range(step):
            prev = vid_preds[i]
            for pred in vid_preds[i::step][1:]:
                per_video.append(int(prev != pred))
                if not noise:
                    prev = pred
        result += np.mean(per_video) / len(predictions)
    return result


def main():
    rng = np.random.default_rng(7)
    cases = []
    for noise, difficulty, frames in [(True, 1, 6), (False, 1, 6), (False, 2, 7), (False, 3, 9)]:
        videos = []
        for _ in range(3):
            # Few distinct values: ties in the rankings and flips between close classes.
            logits = rng.integers(0, 6, size=(frames, CLASSES)).astype(np.float32)
            logits += rng.normal(scale=0.5, size=logits.shape).astype(np.float32) * (rng.random() < 0.5)
            videos.append(logits)
        # argmax takes the first of tied maxima, as rank 1 of the ordinal ranking does.
        predictions = [v.argmax(1) for v in videos]
        ranks = [[np.uint16(rankdata(-f, method="ordinal")) for f in v] for v in videos]
        cases.append({
            "noise": noise,
            "difficulty": difficulty,
            "classes": CLASSES,
            "videos": [v.astype(float).tolist() for v in videos],
            "flip_probability": float(flip_prob(predictions, noise, difficulty)),
            "top5_distance": float(ranking_dist(np.asarray(ranks), noise, difficulty)),
        })
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "imagenet_p_golden.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
