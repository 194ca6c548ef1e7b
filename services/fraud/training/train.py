"""Train the fraud model on the synthetic data set and write the model file and REPORT.md.

    make fraud-model
    python services/fraud/training/train.py [--samples N] [--seed S] [--date YYYYMMDD]
        [--out-dir DIR] [--report PATH]

Same seed, sample count and date give a byte-identical model file (version = date + a hash of
the training data). The held-out metrics are computed by the serving `Scorer` on the written
file, so they describe exactly what the service runs. Needs scikit-learn (requirements-dev.txt);
the service itself does not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fraud.model import FORMAT, MAX_MODEL_POINTS, MODEL_DIR, Scorer, load_scorer
from fraud.model.features import FEATURE_NAMES, feature_docs
from training.synthetic import FRAUD_MIX, SUBTLE_FRAUD_SHARE, Sample, generate, split

DEFAULT_SAMPLES = 60_000
DEFAULT_SEED = 20260101
THRESHOLD_BPS = 5_000  # the serving threshold the report's precision/recall are measured at
REPORT_THRESHOLDS_BPS = (2_000, 3_000, 5_000, 7_000)
C = 1.0  # L2 regularisation strength (inverse) of the logistic regression
REPORT_PATH = Path(__file__).resolve().parent / "REPORT.md"


def data_hash(rows: list[Sample]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(repr((row.features.vector(), row.label)).encode())
    return h.hexdigest()


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


def fit(train: list[Sample]) -> tuple[dict[str, float], float]:
    """Standardise, fit an L2 logistic regression, fold the scaler into the weights."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.array([row.features.vector() for row in train], dtype=np.float64)
    y = np.array([row.label for row in train], dtype=np.int64)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=C, max_iter=2_000).fit(scaler.transform(x), y)
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    coef = model.coef_[0] / scale
    intercept = float(model.intercept_[0] - np.sum(coef * scaler.mean_))
    weights = {name: _sig(float(w)) for name, w in zip(FEATURE_NAMES, coef, strict=True)}
    return weights, _sig(intercept)


def roc_auc(scores: list[float], labels: list[int]) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return float("nan")
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def evaluate(scorer: Scorer, rows: list[Sample]) -> dict[str, Any]:
    """Held-out metrics of the serving scorer: AUC, and precision/recall at thresholds."""
    probs = [scorer.probability(row.features) for row in rows]
    bps = [scorer.score(row.features).probability_bps for row in rows]
    labels = [row.label for row in rows]
    at: dict[str, dict[str, float]] = {}
    for t in sorted({*REPORT_THRESHOLDS_BPS, scorer.threshold_bps}):
        tp = sum(1 for b, y in zip(bps, labels, strict=True) if b >= t and y)
        fp = sum(1 for b, y in zip(bps, labels, strict=True) if b >= t and not y)
        fn = sum(1 for b, y in zip(bps, labels, strict=True) if b < t and y)
        at[str(t)] = {
            "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
            "flagged_share": round((tp + fp) / len(rows), 4),
        }
    by_pattern: dict[str, list[int]] = {}
    for b, row in zip(bps, rows, strict=True):
        if row.label:
            by_pattern.setdefault(row.pattern, [0, 0])
            by_pattern[row.pattern][0] += 1
            by_pattern[row.pattern][1] += b >= scorer.threshold_bps
    return {
        "rows": len(rows),
        "fraud_rows": sum(labels),
        "roc_auc": round(roc_auc(probs, labels), 4),
        "threshold_bps": scorer.threshold_bps,
        "precision": at[str(scorer.threshold_bps)]["precision"],
        "recall": at[str(scorer.threshold_bps)]["recall"],
        "at_threshold_bps": at,
        "recall_by_pattern": {
            p: round(c[1] / c[0], 4) for p, c in sorted(by_pattern.items()) if c[0]
        },
    }


def build(samples: int, seed: int, date: str) -> tuple[dict[str, Any], list[Sample]]:
    """Generate, split, fit. Returns the model document (without metrics) and the test rows."""
    rows = generate(samples, seed)
    train, test = split(rows, seed)
    weights, intercept = fit(train)
    digest = data_hash(rows)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": f"{date}-{digest[:10]}",
        "kind": "logistic_regression",
        "feature_names": list(FEATURE_NAMES),
        "weights": weights,
        "intercept": intercept,
        "threshold_bps": THRESHOLD_BPS,
        "max_points": MAX_MODEL_POINTS,
        "training": {
            "seed": seed,
            "samples": samples,
            "train_rows": len(train),
            "test_rows": len(test),
            "fraud_rate": round(sum(r.label for r in rows) / len(rows), 4),
            "data_sha256": digest,
            "regularisation_C": C,
        },
    }
    return doc, test


def render_report(doc: dict[str, Any], model_file: str, size: int) -> str:
    m = doc["metrics"]
    t = doc["training"]
    lines = [
        "# Fraud model report",
        "",
        "Generated by `make fraud-model` (`services/fraud/training/train.py`); do not edit.",
        "",
        f"- Model version: `{doc['version']}`",
        f"- Model file: `services/fraud/fraud/model/{model_file}` ({size} bytes, committed: it "
        "is a small JSON document of weights, source-like and reviewable, so the service needs "
        "no training step or ML library to start)",
        "- Model: L2 logistic regression (scikit-learn, standardised inputs; the scaler is folded "
        "into the weights), scored in-process in plain Python by `fraud.model.Scorer`",
        f"- Serving threshold: {doc['threshold_bps']} bps (probability "
        f"{doc['threshold_bps'] / 10_000:.2f}); model points = round(probability x "
        f"{doc['max_points']}), 0..{doc['max_points']} of the 0-100 fraud score",
        "",
        "## Data set",
        "",
        f"Synthetic (`services/fraud/training/synthetic.py`, seed {t['seed']}): "
        f"{t['samples']} payments, fraud rate {t['fraud_rate']:.2%}, split {t['train_rows']} "
        f"train / {t['test_rows']} held out (seeded shuffle). SHA-256 of the rows: "
        f"`{t['data_sha256']}`. Reproduce this exact file with `train.py --seed {t['seed']} "
        f"--samples {t['samples']} --date {doc['version'].split('-')[0]}`.",
        "",
        "| pattern | share of rows |",
        "|---|---|",
        f"| legit | {1 - sum(s for _, s in FRAUD_MIX):.1%} |",
        *(f"| {name} | {share:.1%} |" for name, share in FRAUD_MIX),
        "",
        f"{SUBTLE_FRAUD_SHARE:.0%} of fraud rows are 'subtle': drawn from the legit generator "
        "but labelled fraud, so no model can catch them. See the module docstring for each "
        "pattern.",
        "",
        "## Held-out metrics",
        "",
        f"At the serving threshold ({m['threshold_bps']} bps): precision **{m['precision']}**, "
        f"recall **{m['recall']}**; ROC AUC **{m['roc_auc']}** "
        f"({m['rows']} rows, {m['fraud_rows']} fraud).",
        "",
        "| threshold (bps) | precision | recall | flagged share |",
        "|---|---|---|---|",
        *(
            f"| {k} | {v['precision']} | {v['recall']} | {v['flagged_share']} |"
            for k, v in m["at_threshold_bps"].items()
        ),
        "",
        "Recall by pattern at the serving threshold:",
        "",
        "| pattern | recall |",
        "|---|---|",
        *(f"| {p} | {r} |" for p, r in m["recall_by_pattern"].items()),
        "",
        "## Features",
        "",
        "Computed by `fraud.model.features.Features.vector()`, the same code at training and "
        "serving time.",
        "",
        "| feature | meaning | weight |",
        "|---|---|---|",
        *(f"| `{n}` | {d} | {doc['weights'][n]} |" for n, d in feature_docs().items()),
        f"| (intercept) | | {doc['intercept']} |",
        "",
        "## Caveats",
        "",
        "The data is synthetic: the metrics show the model learned the documented patterns, not "
        "how it performs on real traffic. Retrain on labelled production outcomes (chargebacks, "
        "confirmed fraud) before trusting the probabilities, and re-check the threshold.",
        "",
        "A linear model shares one amount/new-device effect across patterns: a daytime account "
        "takeover at an ordinary MCC (new device and IP, Rs 85,000, 900-day-old user) scores "
        "about 0.47, near the threshold, although ~94% of such synthetic rows are fraud. A "
        "tree model would separate it; the rules and velocity signals cover it meanwhile.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--date", default=datetime.now(UTC).strftime("%Y%m%d"))
    parser.add_argument("--out-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--report", type=Path, default=REPORT_PATH)
    args = parser.parse_args(argv)

    doc, test = build(args.samples, args.seed, args.date)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"fraud-model-{doc['version']}.json"
    # Score the held-out set with the serving code on the exact (rounded) weights.
    doc["metrics"] = evaluate(Scorer.from_dict(doc), test)
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    for stale in out_dir.glob("fraud-model-*.json"):
        if stale != model_path:
            stale.unlink()
    model_path.write_text(text, encoding="utf-8")
    load_scorer(model_path)  # the written file must load
    args.report.write_text(
        render_report(doc, model_path.name, len(text.encode())), encoding="utf-8"
    )
    m = doc["metrics"]
    print(
        f"{model_path} ({len(text.encode())} bytes): AUC {m['roc_auc']}, precision "
        f"{m['precision']}, recall {m['recall']} at {m['threshold_bps']} bps",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
