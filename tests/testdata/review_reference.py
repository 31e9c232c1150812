"""Reference values for the review's statistics, from scikit-learn and statsmodels.

Writes tests/testdata/review_reference.json: inputs (seeded synthetic scores and paired counts)
and what the reference libraries compute from them. The tests (tests/evaluate/roc_test.ts,
tests/evaluate/paired_test.ts) read it; no Python runs at test time.

Regenerate (any machine with PyPI):

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install scikit-learn==1.9.1 statsmodels==0.15.0 numpy scipy
    /tmp/refvenv/bin/python tests/testdata/review_reference.py

References:
- roc_curve(drop_intermediate=False) and roc_auc_score (per class, and multi_class="ovr" macro)
  from scikit-learn;
- mcnemar(table, exact=True) from statsmodels; fisher_exact (two-sided) from SciPy;
- the Wilson limits inside Newcombe's paired interval from statsmodels' proportion_confint;
- DeLong's standard errors from an independent implementation here (the fast midrank algorithm
  of Sun & Xu, IEEE SPL 2014), since neither library has DeLong.
"""
import json
import math
import os

import numpy as np
import sklearn
import statsmodels
from scipy.stats import fisher_exact, norm, rankdata
from sklearn.metrics import roc_auc_score, roc_curve
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

rng = np.random.default_rng(20261206)


def delong_components(scores, positive):
    """Sun & Xu's fast DeLong: AUC and its variance from midranks."""
    x = scores[positive]
    y = scores[~positive]
    m, n = len(x), len(y)
    tx = rankdata(x)
    ty = rankdata(y)
    tz = rankdata(np.concatenate([x, y]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n
    v01 = 1 - (tz[m:] - ty) / m
    return auc, v10, v01, m, n


def delong(scores, positive):
    auc, v10, v01, m, n = delong_components(scores, positive)
    s10 = np.var(v10, ddof=1) if m > 1 else 0.0
    s01 = np.var(v01, ddof=1) if n > 1 else 0.0
    return auc, math.sqrt(s10 / m + s01 / n)


def influence(scores, positive):
    auc, v10, v01, m, n = delong_components(scores, positive)
    out = np.zeros(len(scores))
    out[positive] = (v10 - auc) / math.sqrt(m * max(1, m - 1))
    out[~positive] = (v01 - auc) / math.sqrt(n * max(1, n - 1))
    return out


def roc_case(name, labels, probabilities, classes):
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    per_class = []
    infl = []
    for k in range(classes):
        positive = labels == k
        fpr, tpr, thresholds = roc_curve(positive, probabilities[:, k], drop_intermediate=False)
        auc_sklearn = roc_auc_score(positive, probabilities[:, k])
        auc, se = delong(probabilities[:, k], positive)
        assert abs(auc - auc_sklearn) < 1e-12
        infl.append(influence(probabilities[:, k], positive))
        per_class.append({
            "auc": auc_sklearn,
            "delong_se": se,
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            # The first threshold is +inf in scikit-learn; JSON has no infinity.
            "thresholds": [None if math.isinf(t) else float(t) for t in thresholds],
        })
    macro = roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    infl = np.asarray(infl)
    macro_se = math.sqrt(max(0.0, float(infl.sum(axis=0) @ infl.sum(axis=0))) / classes**2)
    return {
        "name": name,
        "labels": labels.tolist(),
        "probabilities": probabilities.tolist(),
        "per_class": per_class,
        "macro_auc": macro,
        "macro_delong_se": macro_se,
        "z": float(norm.ppf(0.975)),
    }


def softmax_rows(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


cases = []
# 66 images, 3 classes (26/20/20 as the paper's test set), informative but imperfect scores;
# logits rounded to halves so that probabilities tie.
labels = np.array([0] * 26 + [1] * 20 + [2] * 20)
logits = rng.normal(0, 1, (66, 3))
logits[np.arange(66), labels] += 1.4
cases.append(roc_case("test-set-like", labels, softmax_rows(np.round(logits * 2) / 2), 3))
# A small set with heavy ties.
labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
probabilities = np.array([
    [0.6, 0.2, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2],
    [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5],
])
cases.append(roc_case("ties", labels, probabilities, 3))
# 219 images, the external set's class sizes, a model that calls most images class 0.
labels = np.array([0] * 107 + [1] * 100 + [2] * 12)
logits = rng.normal(0, 1, (219, 3))
logits[:, 0] += 2.0
logits[np.arange(219), labels] += 0.7
cases.append(roc_case("external-like", labels, softmax_rows(logits), 3))

paired = []
for a, b, c, d in [(40, 0, 0, 26), (50, 3, 1, 12), (45, 12, 4, 5), (30, 9, 2, 25), (12, 9, 2, 21),
                   (20, 25, 25, 20), (60, 0, 6, 0), (10, 40, 12, 4), (0, 5, 0, 61)]:
    table = [[a, b], [c, d]]
    result = mcnemar(table, exact=True)
    n = a + b + c + d
    l1, u1 = proportion_confint(a + b, n, alpha=0.05, method="wilson")
    l2, u2 = proportion_confint(a + c, n, alpha=0.05, method="wilson")
    p1, p2 = (a + b) / n, (a + c) / n
    den = math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    phi = (a * d - b * c) / den if den > 0 else 0.0
    delta = math.sqrt(max(0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    paired.append({
        "counts": [a, b, c, d],
        "mcnemar_p": float(result.pvalue),
        "difference": p1 - p2,
        "newcombe_lower": max(-1.0, p1 - p2 - delta),
        "newcombe_upper": min(1.0, p1 - p2 + eps),
    })

fisher = []
for table in [[[2, 18], [18, 2]], [[9, 11], [11, 9]], [[0, 7], [12, 0]], [[3, 17], [15, 5]],
              [[1, 0], [0, 1]], [[10, 10], [10, 10]], [[45, 5], [30, 20]], [[0, 0], [4, 6]]]:
    fisher.append({"table": table, "p": float(fisher_exact(table, alternative="two-sided").pvalue)})

out = {
    "generated_by": "tests/testdata/review_reference.py",
    "versions": {
        "scikit-learn": sklearn.__version__,
        "statsmodels": statsmodels.__version__,
        "numpy": np.__version__,
    },
    "roc": cases,
    "paired": paired,
    "fisher": fisher,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "review_reference.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print(f"wrote {path}")
