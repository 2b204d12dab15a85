"""FID and KID (torchmetrics fed extracted features) against independent computations, and
the pipeline-trained feature extractor."""

import numpy as np
import pytest
import torch

from medaug.metrics.image_quality import BottleneckExtractor, frechet_distance, kernel_distance


def test_frechet_distance_of_diagonal_gaussians_is_mean_gap_plus_std_gaps():
    """With diagonal covariances the matrix square root is elementwise, so FID reduces to
    |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 over the sample statistics."""
    rng = np.random.default_rng(0)
    a = rng.normal([0.0, 1.0, -2.0], [1.0, 0.5, 2.0], size=(4000, 3))
    b = rng.normal([0.5, 1.0, -1.0], [2.0, 0.5, 1.0], size=(3000, 3))
    # Decorrelate the samples exactly so that the diagonal formula holds for the estimates too.
    a = (a - a.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(a, rowvar=False)).T) * a.std(0, ddof=1) + a.mean(0)
    b = (b - b.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(b, rowvar=False)).T) * b.std(0, ddof=1) + b.mean(0)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + ((a.std(0, ddof=1) - b.std(0, ddof=1)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


def test_frechet_distance_agrees_with_the_matrix_square_root_formula_on_correlated_features():
    """The formula written out with scipy's sqrtm (the pytorch-fid / clean-fid computation) on
    correlated 32-d features, including fewer samples than dimensions (singular covariances)."""
    from scipy import linalg

    def by_hand(a, b):
        cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        root = linalg.sqrtm(cov_a @ cov_b).real
        return ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)

    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(32, 32))
    a = rng.normal(size=(500, 32)) @ mixing
    b = rng.normal(0.3, 1.2, size=(400, 32)) @ mixing
    assert frechet_distance(a, b) == pytest.approx(by_hand(a, b), rel=1e-3)
    assert frechet_distance(a[:20], b[:25]) == pytest.approx(by_hand(a[:20], b[:25]), rel=1e-3)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :5])


def test_kernel_distance_is_the_unbiased_cubic_mmd_by_hand():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 4)), rng.normal(0.7, 1.0, size=(5, 4))

    def k(x, y):
        return (x @ y / 4 + 1) ** 3

    m = 5
    within = sum(k(a[i], a[j]) + k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / m**2
    # One subset holding every vector (a permutation of it): exactly the MMD above.
    mean, std = kernel_distance(a, b, subsets=3, subset_size=5)
    assert mean == pytest.approx(within - 2 * across) and std == pytest.approx(0.0, abs=1e-12)
    same, _ = kernel_distance(rng.normal(size=(400, 4)), rng.normal(size=(400, 4)), subsets=20, subset_size=200)
    shifted, _ = kernel_distance(rng.normal(size=(400, 4)), rng.normal(1.0, 1.0, size=(400, 4)), 20, 200)
    assert abs(same) < 0.05 < shifted
    # Its subsets are drawn from the given seed, whatever the global generator's state.
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(60, 4))
    torch.manual_seed(123)
    first = kernel_distance(x, y, subsets=5, subset_size=20, seed=7)
    torch.manual_seed(456)
    assert kernel_distance(x, y, subsets=5, subset_size=20, seed=7) == first
    assert kernel_distance(x, y, subsets=5, subset_size=20, seed=8) != first


def test_bottleneck_extractor_reads_the_lowest_resolution_of_a_monai_unet():
    from medaug.diffboost.segmenter import build_network

    torch.manual_seed(0)
    network = build_network("UNet", 32, [8, 16, 32, 64], [2, 2, 2])
    extractor = BottleneckExtractor(network, 32)
    images = np.random.default_rng(0).uniform(-1, 1, (5, 32, 32)).astype(np.float32)
    features = extractor(images, batch_size=2)
    assert features.shape == (5, 64) and np.isfinite(features).all()
    # Deterministic, per image (batching does not matter), and different images differ.
    assert np.allclose(extractor(images[2:3]), features[2:3], atol=1e-5)
    assert not np.allclose(features[0], features[1])
