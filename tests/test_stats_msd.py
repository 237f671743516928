"""tMSD against trackpy's msd / imsd / emsd on identical trajectories, with and without gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sam4em_live.stats.msd import ensemble_msd, tmsd
from sam4em_live.stats.table import msd_long_table, track_msds

trackpy = pytest.importorskip("trackpy")

# trackpy 0.7 calls DataFrame.sum positionally, which pandas 3 deprecates; not our code.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:trackpy.*")


def random_table(rng, lengths, gap_fraction):
    parts = []
    for pid, n in enumerate(lengths, start=1):
        xy = np.cumsum(rng.normal(0, 1.3, size=(n, 2)), axis=0) + rng.uniform(0, 500, 2)
        frames = np.arange(n) + int(rng.integers(0, 20))
        keep = rng.random(n) >= gap_fraction
        keep[[0, -1]] = True  # trackpy's reindexing needs the span's ends
        parts.append(pd.DataFrame({"frame": frames[keep], "particle": pid, "x": xy[keep, 0], "y": xy[keep, 1]}))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("gap_fraction", [0.0, 0.25])
def test_tmsd_matches_trackpy_msd_and_imsd(gap_fraction):
    rng = np.random.default_rng(11)
    table = random_table(rng, [120, 80, 200], gap_fraction)
    max_lag = 30
    imsd = trackpy.imsd(table, mpp=1.0, fps=1.0, max_lagtime=max_lag)
    ours = track_msds(table, max_lag=max_lag)
    for pid, group in table.groupby("particle"):
        ref = trackpy.msd(group, mpp=1.0, fps=1.0, max_lagtime=max_lag)
        mine = ours[pid]
        lags = ref.index.to_numpy()
        np.testing.assert_allclose(mine.msd[lags - 1], ref["msd"].to_numpy(), rtol=1e-10, equal_nan=True)
        np.testing.assert_allclose(mine.msd[lags - 1], imsd[pid].to_numpy()[: lags.size], rtol=1e-10,
                                   equal_nan=True)
    if gap_fraction:
        assert any(np.any(m.n < (len(table[table.particle == p]) - m.lag_frames)) for p, m in ours.items())


def test_pair_counts_are_true_lag_pairs():
    # Frames 0, 1, 2, 5, 6: lag 1 pairs (0,1),(1,2),(5,6); lag 2 (0,2); lag 3 (2,5); lag 4 (1,5),(2,6);
    # lag 5 (0,5),(1,6); lag 6 (0,6); nothing at lag 7. Array offsets would pair 2 with 5 at "lag 1".
    m = tmsd([6, 0, 2, 1, 5], [6, 0, 2, 1, 5], [0, 0, 0, 0, 0], max_lag=7)
    assert m.n.tolist() == [3, 1, 1, 2, 2, 1, 0]
    np.testing.assert_allclose(m.msd, [1, 4, 9, 16, 25, 36, np.nan], equal_nan=True)
    with pytest.raises(ValueError, match="more than once"):
        tmsd([0, 1, 1], [0, 1, 2], [0, 0, 0])


def test_ensemble_weighting_matches_trackpy_emsd_and_pooled_pairs():
    rng = np.random.default_rng(5)
    table = random_table(rng, [150, 60, 300, 90], 0.0)
    max_lag = 25
    msds = track_msds(table, max_lag=max_lag)
    ref = trackpy.emsd(table, mpp=1.0, fps=1.0, max_lagtime=max_lag)
    independent = ensemble_msd(msds.values(), weighting="independent")
    np.testing.assert_allclose(independent.msd[: ref.size], ref.to_numpy(), rtol=1e-10)
    # Pair weighting is the pooled mean over every displacement pair of every particle.
    pooled = ensemble_msd(msds.values(), weighting="pairs")
    for lag in (1, 7, 25):
        sq = []
        for _, g in table.groupby("particle"):
            xy = g[["x", "y"]].to_numpy()
            sq.append(np.sum((xy[lag:] - xy[:-lag]) ** 2, axis=1))
        assert pooled.msd[lag - 1] == pytest.approx(np.mean(np.concatenate(sq)), rel=1e-12)
    with pytest.raises(ValueError, match="weighting must be"):
        ensemble_msd(msds.values(), weighting="bogus")


def test_long_table_units():
    rng = np.random.default_rng(2)
    table = random_table(rng, [50], 0.1)
    long = msd_long_table(track_msds(table, max_lag=5), fps=20.0, pixel_size_nm=3.0)
    np.testing.assert_allclose(long.lag_s, long.lag_frames / 20.0)
    np.testing.assert_allclose(long.msd_nm2, long.msd_px2 * 9.0)
    assert (long.n > 0).all()
