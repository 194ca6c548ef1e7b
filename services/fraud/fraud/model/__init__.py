"""The fraud ML model, served in-process (DESIGN.md §5).

The model is a logistic regression trained by services/fraud/training/train.py and committed as
a small JSON file next to this module (`fraud-model-<version>.json`): feature names, one weight
per feature (the training scaler is folded in), an intercept and the version. No pickle: the file
is data, loading it is instant and scoring is a few dozen float operations in plain Python.

`Scorer.score(features)` gives a `ModelScore`: the probability of fraud in basis points and the
model's share of the 0-100 fraud score (`points`, 0..MAX_MODEL_POINTS). `HttpScorer` asks an
external scorer (FRAUD_ML_API_URL) instead and raises `ModelUnavailable` when it cannot answer,
so the service can fall back to rules only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fraud.model.features import FEATURE_NAMES, Features

__all__ = [
    "FORMAT",
    "MAX_MODEL_POINTS",
    "MODEL_DIR",
    "Features",
    "HttpScorer",
    "ModelScore",
    "ModelUnavailable",
    "Scorer",
    "default_model_path",
    "load_scorer",
    "points_for",
]

MODEL_DIR = Path(__file__).resolve().parent
MAX_MODEL_POINTS = 40
FORMAT = "paygate-fraud-logreg/1"


class ModelUnavailable(RuntimeError):
    """The model could not score: bad model file, or the external scorer failed."""


@dataclass(frozen=True, slots=True)
class ModelScore:
    """The model's verdict on one payment."""

    points: int  # 0..MAX_MODEL_POINTS, the model's contribution to the 0-100 score
    probability_bps: int  # 0..10000
    version: str


def points_for(probability_bps: int) -> int:
    """Model points for a probability: linear, rounded half up, 0..MAX_MODEL_POINTS."""
    bps = min(max(probability_bps, 0), 10_000)
    return (bps * MAX_MODEL_POINTS + 5_000) // 10_000


def _bps(probability: float) -> int:
    if not math.isfinite(probability):
        raise ModelUnavailable(f"probability is not finite: {probability!r}")
    return min(max(round(probability * 10_000), 0), 10_000)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Scorer:
    """Logistic regression over `Features.vector()`; deterministic and side-effect free."""

    __slots__ = ("intercept", "threshold_bps", "version", "weights")

    def __init__(
        self, *, version: str, weights: tuple[float, ...], intercept: float, threshold_bps: int
    ) -> None:
        if len(weights) != len(FEATURE_NAMES):
            raise ModelUnavailable(f"{len(weights)} weights for {len(FEATURE_NAMES)} features")
        self.version = version
        self.weights = weights
        self.intercept = intercept
        self.threshold_bps = threshold_bps

    def probability(self, features: Features) -> float:
        z = self.intercept
        for w, x in zip(self.weights, features.vector(), strict=True):
            z += w * x
        return _sigmoid(z)

    def score(self, features: Features) -> ModelScore:
        bps = _bps(self.probability(features))
        return ModelScore(points=points_for(bps), probability_bps=bps, version=self.version)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Scorer:
        if doc.get("format") != FORMAT:
            raise ModelUnavailable(f"unknown model format {doc.get('format')!r}")
        names = tuple(doc["feature_names"])
        if names != FEATURE_NAMES:
            raise ModelUnavailable(
                "model features differ from fraud.model.features.FEATURE_NAMES; retrain "
                "with `make fraud-model`"
            )
        weights = tuple(float(doc["weights"][n]) for n in names)
        return cls(
            version=str(doc["version"]),
            weights=weights,
            intercept=float(doc["intercept"]),
            threshold_bps=int(doc["threshold_bps"]),
        )


def default_model_path() -> Path:
    """The committed model file (the newest, by name, if there are several)."""
    files = sorted(MODEL_DIR.glob("fraud-model-*.json"))
    if not files:
        raise ModelUnavailable(f"no fraud-model-*.json in {MODEL_DIR}; run `make fraud-model`")
    return files[-1]


def load_scorer(path: Path | None = None) -> Scorer:
    """Load a model file (default: the committed one). Raises ModelUnavailable if unusable."""
    target = path or default_model_path()
    try:
        doc = json.loads(target.read_text(encoding="utf-8"))
        return Scorer.from_dict(doc)
    except ModelUnavailable:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"cannot load fraud model {target}: {exc}") from exc


class HttpScorer:
    """An external scorer (FRAUD_ML_API_URL): POST features as JSON, get {"probability": p}.

    The answer may also carry "version"; otherwise the version is "external". Any failure
    (timeout, connection error, non-2xx, malformed body, probability outside 0..1) raises
    ModelUnavailable so the caller can apply its fail-open/fail-closed policy.
    """

    def __init__(
        self, url: str, *, timeout_s: float = 0.2, client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))
        self._owns_client = client is None

    async def score(self, features: Features) -> ModelScore:
        try:
            resp = await self._client.post(self.url, json=features.to_json())
            resp.raise_for_status()
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ModelUnavailable(f"external fraud scorer failed: {exc!r}") from exc
        if not isinstance(body, dict):
            raise ModelUnavailable("external fraud scorer answered a non-object")
        probability = body.get("probability")
        if isinstance(probability, bool) or not isinstance(probability, int | float):
            raise ModelUnavailable("external fraud scorer answered no numeric probability")
        if not 0.0 <= float(probability) <= 1.0:
            raise ModelUnavailable(f"external fraud scorer probability {probability!r} not in 0..1")
        bps = _bps(float(probability))
        version = body.get("version")
        return ModelScore(
            points=points_for(bps),
            probability_bps=bps,
            version=version if isinstance(version, str) and version else "external",
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
