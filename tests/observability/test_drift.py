"""Drift: the PSI arithmetic, binning like the trainer's profile, the sliding window,
and a live loop where traffic like the training data shows no drift and shifted
traffic is flagged against the blueprint's thresholds, in GetStats and as metrics."""

from __future__ import annotations

import math

import numpy as np

from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.services.feedback.drift import EPSILON, FeatureBins, LiveWindow, Thresholds, psi
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from tests.observability.helpers import (
    DRIFT,
    USE_CASE,
    free_port_block,
    sample,
    scrape,
    start_loop,
    training_rows,
    wait_until,
)


def test_psi_follows_its_definition():
    # live shares (0.5, 0.5) against reference (0.9, 0.1), worked by hand
    expected = (0.5 - 0.9) * math.log(0.5 / 0.9) + (0.5 - 0.1) * math.log(0.5 / 0.1)
    assert abs(psi(np.array([50, 50]), np.array([900, 100])) - expected) < 1e-12
    assert psi(np.array([3, 7]), np.array([30, 70])) == 0.0  # same shares, any totals
    # an empty bin is floored, not infinite
    floored = (0.5 - EPSILON) * math.log(0.5 / EPSILON) + (0.5 - 1.0) * math.log(0.5 / 1.0)
    assert abs(psi(np.array([1, 1]), np.array([0, 10])) - floored) < 1e-9
    assert psi(np.zeros(3), np.ones(3)) == 0.0


def test_bins_match_the_profile_layout():
    numeric = FeatureBins.from_profile(tpb.FeatureProfile(name="x", bin_edges=[0.0, 1.0], bin_counts=[1, 2, 3],
                                                          missing_count=4))
    # (-inf, 0], (0, 1], (1, inf), missing  — numpy.searchsorted side="left"
    got = numeric.histogram(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]))
    assert got.tolist() == [2, 2, 1, 1]
    assert numeric.reference.tolist() == [1, 2, 3, 4]
    categorical = FeatureBins.from_profile(tpb.FeatureProfile(name="c", categorical=True, bin_counts=[5, 5, 5, 0]))
    # codes 0..2, then unknown (-1, 7, 1.5), then missing
    got = categorical.histogram(np.array([0, 2, 2, -1, 7, 1.5, np.nan]))
    assert got.tolist() == [1, 0, 2, 3, 1]


def test_window_halves_old_counts_and_builds_a_score_reference():
    bins = [FeatureBins("x", False, np.array([0.0]), np.array([50.0, 50.0, 0.0]))]
    window = LiveWindow(1, bins, window=200)
    g = np.random.default_rng(3)
    window.add(g.normal(size=(150, 1)), g.uniform(size=150))
    assert window.decisions == 150 and window.score_reference is not None  # 150 >= max(200 // 4, 100)
    assert window.score_reference_kind == "first_live_window"
    window.add(g.normal(size=(100, 1)), g.uniform(size=100))
    assert window.decisions == 125  # 250 > 200: halved
    assert abs(window.counts[0].sum() - 125) < 1e-9
    report = window.report(Thresholds(feature_psi=0.2, prediction_psi=0.2, min_decisions=100))
    assert report.status == "ok" and not report.feature_drift
    assert report.features[0].psi < 0.1  # N(0, 1) split at 0 like the reference (wide margin)
    assert window.report(Thresholds(min_decisions=1000)).status == "insufficient_data"


async def test_live_drift_is_flagged_against_blueprint_thresholds(make_settings):
    base = free_port_block(4)
    settings = make_settings(metrics_port=base, decision_log_flush_interval_s=0.05, drift_interval_s=0.2,
                             drift_window_decisions=4000, allow_plaintext=True)
    loop = await start_loop(settings)
    feedback_port = base + 1
    try:
        x, labels = training_rows(2000, seed=0)
        await loop.register(x, labels, 1_700_000_000_000, 1_700_086_400_000)
        feedback = loop.feedback

        async def drift_after(n: float):
            stats = await feedback.GetStats(fpb.GetStatsRequest(use_case=USE_CASE), timeout=30)
            return stats if stats.HasField("drift") and stats.drift.window_decisions >= n else None

        # 1. Traffic drawn like the training data: no drift.
        await loop.decide_batch(training_rows(1200, seed=1)[0])
        same = (await wait_until(lambda: drift_after(1200))).drift
        assert same.status == "ok" and same.model_version == 1
        assert [f.name for f in same.features] == ["x", "y", "country"]
        # expected PSI of two samples of one distribution over ~10 bins is ~0.01-0.02
        assert all(f.psi < 0.1 for f in same.features), same
        assert not same.feature_drift and not same.prediction_drift
        assert (same.feature_psi_threshold, same.prediction_psi_threshold) == (
            DRIFT["feature_psi_threshold"], DRIFT["prediction_psi_threshold"])  # from the blueprint
        # the reference is the model's training score distribution (Model.prediction_profile)
        assert same.prediction_reference == "training"
        assert same.prediction_psi < 0.1

        # 2. Shifted traffic: x moves by two standard deviations, every country is "it".
        shifted = training_rows(1200, seed=2)[0]
        shifted[:, 0] += 2.0
        shifted[:, 2] = 2
        await loop.decide_batch(shifted)
        moved = (await wait_until(lambda: drift_after(2400))).drift
        by_name = {f.name: f for f in moved.features}
        assert by_name["x"].drifted and by_name["x"].psi > 2 * DRIFT["feature_psi_threshold"]
        assert by_name["country"].drifted and by_name["country"].psi > DRIFT["feature_psi_threshold"]
        assert not by_name["y"].drifted and by_name["y"].psi < 0.1  # y kept its distribution
        assert moved.feature_drift and moved.max_feature_psi == by_name["x"].psi
        assert moved.prediction_drift and moved.prediction_psi > DRIFT["prediction_psi_threshold"]

        # The same values as metrics, with the thresholds for the alert rules.
        samples = await scrape(feedback_port)
        psi_x = sample(samples, "loopwise_feature_drift_psi", use_case=USE_CASE, feature="x")
        assert psi_x is not None and abs(psi_x - by_name["x"].psi) < 1e-9
        assert sample(samples, "loopwise_drift_detected", use_case=USE_CASE, kind="feature") == 1
        assert sample(samples, "loopwise_drift_detected", use_case=USE_CASE, kind="prediction") == 1
        assert sample(samples, "loopwise_drift_threshold", use_case=USE_CASE, kind="feature") == 0.25
        assert sample(samples, "loopwise_drift_window_decisions", use_case=USE_CASE, model_version="1") >= 2400
    finally:
        await loop.stop()
