import logging
import os

import numpy as np
import pytest
import torch

from medaug.diffboost import conditions
from medaug.diffboost.conditions import HedNetwork, canny_edges, condition_maps, hed_edges, load_hed, mask_contour
from medaug.errors import DatasetError

# Parameter names the official ControlNet/DiffBoost HED loader expects after its
# ``key.replace('module', 'net')``; network-bsds500.pth itself stores them as ``moduleVggOne.0.weight`` etc.
OFFICIAL_HED_KEYS = [
    "netVggOne.0.weight", "netVggOne.0.bias", "netVggOne.2.weight", "netVggOne.2.bias",
    "netVggTwo.1.weight", "netVggTwo.1.bias", "netVggTwo.3.weight", "netVggTwo.3.bias",
    "netVggThr.1.weight", "netVggThr.1.bias", "netVggThr.3.weight", "netVggThr.3.bias",
    "netVggThr.5.weight", "netVggThr.5.bias",
    "netVggFou.1.weight", "netVggFou.1.bias", "netVggFou.3.weight", "netVggFou.3.bias",
    "netVggFou.5.weight", "netVggFou.5.bias",
    "netVggFiv.1.weight", "netVggFiv.1.bias", "netVggFiv.3.weight", "netVggFiv.3.bias",
    "netVggFiv.5.weight", "netVggFiv.5.bias",
    "netScoreOne.weight", "netScoreOne.bias", "netScoreTwo.weight", "netScoreTwo.bias",
    "netScoreThr.weight", "netScoreThr.bias", "netScoreFou.weight", "netScoreFou.bias",
    "netScoreFiv.weight", "netScoreFiv.bias",
    "netCombine.0.weight", "netCombine.0.bias",
]  # fmt: skip


@pytest.fixture(scope="module")
def hed_file(tmp_path_factory):
    """Weights of a randomly initialised HED, saved as a plain state dict."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hed") / "random-hed.pth"
    torch.save(HedNetwork().state_dict(), path)
    return path


def _square_mask(size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.int64)
    mask[8:24, 8:24] = 1
    return mask


def test_contour_of_a_square_lies_on_its_border():
    contour = mask_contour(_square_mask())
    assert contour.dtype == np.float32 and contour.shape == (32, 32)
    assert contour.min() == 0 and contour.max() == 1
    # The band straddles the edge: one pixel outside and one inside every side.
    for row in (7, 8, 23, 24):
        assert np.all(contour[row, 9:23] == 1)
    for col in (7, 8, 23, 24):
        assert np.all(contour[9:23, col] == 1)
    assert np.all(contour[10:22, 10:22] == 0)  # far inside
    far_outside = np.ones((32, 32), dtype=bool)
    far_outside[5:27, 5:27] = False
    assert np.all(contour[far_outside] == 0)


def test_contour_is_the_scharr_gradient_magnitude_before_clipping():
    # A small step keeps |grad| below the clip: a straight edge weighs 3 + 10 + 3 = 16 times the step.
    mask = np.zeros((8, 8))
    mask[:, 4:] = 0.01
    contour = mask_contour(mask)
    np.testing.assert_allclose(contour[:, 3:5], 0.16, rtol=1e-5)
    assert np.all(contour[:, :3] == 0) and np.all(contour[:, 5:] == 0)


def test_contour_sees_boundaries_between_classes_but_not_the_image_border():
    mask = np.ones((16, 16), dtype=np.int64)
    mask[:, 8:] = 2
    contour = mask_contour(mask)
    assert np.all(contour[:, 7:9] == 1)
    assert np.all(contour[:, :6] == 0) and np.all(contour[:, 10:] == 0)


def test_canny_fallback_is_binary_and_contains_the_mask_contour(caplog):
    mask = _square_mask()
    image = np.where(mask > 0, 0.8, -0.6).astype(np.float32)
    images, masks = np.stack([image, np.full_like(image, 0.8)]), np.stack([mask, np.zeros_like(mask)])
    conditions._warn_canny_fallback.cache_clear()  # warned once per process; make this call the first
    with caplog.at_level(logging.WARNING, logger="medaug.diffboost.conditions"):
        maps, method = condition_maps(images, masks)
    assert method == "canny"
    assert "HED" in caplog.text and "network-bsds500.pth" in caplog.text
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert np.all(maps[0] >= mask_contour(mask))
    assert np.all(maps[1] == 0)  # a flat bright slice without labels has no edges, not even a frame

    edges = canny_edges(images)
    assert set(np.unique(edges)) == {0.0, 1.0} and edges[0].sum() > 0 and edges[1].sum() == 0
    assert edges[0, 16, 16] == 0 and edges[0, 0, 0] == 0  # no edge inside the square nor at the image border


def test_condition_maps_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        condition_maps(np.zeros((2, 16, 16)), np.zeros((2, 16, 17)))


def test_random_hed_gives_edge_probabilities_of_the_input_size():
    torch.manual_seed(1)
    model = HedNetwork().eval()
    x = torch.rand(2, 3, 32, 48) * 255
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, 1, 32, 48)
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="at least 16 pixels"):
        model(torch.zeros(1, 3, 8, 32))


def test_hed_keys_match_the_official_checkpoint_layout():
    state = HedNetwork().state_dict()
    assert list(state) == OFFICIAL_HED_KEYS
    assert state["netVggOne.0.weight"].shape == (64, 3, 3, 3)
    assert state["netVggFiv.5.weight"].shape == (512, 512, 3, 3)
    assert state["netScoreFou.weight"].shape == (1, 512, 1, 1)
    assert state["netCombine.0.weight"].shape == (1, 5, 1, 1)
    # The file itself uses the original ``module*`` names; they load directly too.
    original = {key.replace("net", "module"): value for key, value in state.items()}
    model = HedNetwork()
    model.load_state_dict(original)
    assert torch.equal(model.netVggThr[5].weight, state["netVggThr.5.weight"])


def _tracer_hed() -> HedNetwork:
    """A HED whose output is sigmoid(relu(x_0 - 104.007)): only the first stage and head contribute."""
    model = HedNetwork()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.netVggOne[0].weight[0, 0, 1, 1] = 1
        model.netVggOne[2].weight[0, 0, 1, 1] = 1
        model.netScoreOne.weight[0, 0] = 1
        model.netCombine[0].weight[0, 0] = 1
    return model.eval()


def test_hed_edges_scale_subtract_the_mean_and_quantise_like_the_official_code():
    images = np.stack([np.full((16, 24), -1.0), np.full((16, 24), 2 * 110 / 255 - 1)]).astype(np.float32)
    edges = hed_edges(images, _tracer_hed(), batch_size=1)
    assert edges.shape == (2, 16, 24) and edges.dtype == np.float32
    # Pixel value 0 -> relu(0 - 104.007) = 0 -> sigmoid 0.5 -> uint8 127.
    np.testing.assert_allclose(edges[0], 127 / 255)
    expected = np.floor(255 / (1 + np.exp(-(110 - 104.00698793)))) / 255
    np.testing.assert_allclose(edges[1], expected, rtol=1e-6)


def test_load_hed_round_trips_weights(hed_file):
    model = load_hed(hed_file)
    assert not model.training
    torch.manual_seed(0)
    reference = HedNetwork().eval()  # same seed as the saved one
    images = np.random.default_rng(0).uniform(-1, 1, size=(3, 16, 24)).astype(np.float32)
    expected = hed_edges(images, reference)
    np.testing.assert_array_equal(hed_edges(images, model, batch_size=2), expected)
    assert not np.array_equal(hed_edges(images, HedNetwork().eval()), expected)


def test_load_hed_names_the_file_when_it_is_missing_or_wrong(tmp_path):
    missing = tmp_path / "absent.pth"
    with pytest.raises(DatasetError, match="absent.pth") as info:
        load_hed(missing)
    assert info.value.path == missing

    state = HedNetwork().state_dict()
    state["netScoreSix.weight"] = state.pop("netScoreFiv.weight")
    wrong = tmp_path / "wrong-keys.pth"
    torch.save(state, wrong)
    with pytest.raises(DatasetError, match="wrong-keys.pth.*do not match"):
        load_hed(wrong)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DatasetError, match="garbage.pth.*cannot read"):
        load_hed(garbage)


def test_condition_maps_with_hed_weights(hed_file):
    mask = np.zeros((2, 32, 48), dtype=np.int64)
    mask[:, 8:24, 10:30] = 1
    images = np.random.default_rng(1).uniform(-1, 1, size=(2, 32, 48)).astype(np.float32)
    maps, method = condition_maps(images, mask, hed_weights=hed_file)
    assert method == "hed"
    assert maps.shape == (2, 32, 48) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    hed = hed_edges(images, load_hed(hed_file))
    np.testing.assert_allclose(maps, np.clip(hed + np.stack([mask_contour(m) for m in mask]), 0, 1))


def test_condition_maps_reuses_the_hed_network_until_the_file_changes(tmp_path):
    path = tmp_path / "hed.pth"
    images = np.random.default_rng(2).uniform(-1, 1, size=(1, 16, 16)).astype(np.float32)
    masks = np.zeros((1, 16, 16), dtype=np.int64)
    torch.manual_seed(2)
    torch.save(HedNetwork().state_dict(), path)
    first, _ = condition_maps(images, masks, hed_weights=path)
    np.testing.assert_array_equal(condition_maps(images, masks, hed_weights=str(path))[0], first)
    torch.manual_seed(3)
    torch.save(HedNetwork().state_dict(), path)
    # Same size, and possibly the same timestamp on a coarse clock: make the change visible.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert not np.array_equal(condition_maps(images, masks, hed_weights=path)[0], first)


def test_canny_thresholds_are_controlnets_and_skip_weak_texture():
    """ControlNet's annotator thresholds (cv2.Canny 100/200 on 8-bit images) keep a strong
    boundary and drop a texture a tenth of the range deep, which skimage's own defaults trace."""
    from scipy import ndimage

    assert pytest.approx((100 / 255, 200 / 255)) == conditions.CANNY_THRESHOLDS
    mask = _square_mask() > 0
    band = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_erosion(mask, iterations=2)
    texture = 0.2 * np.sin(np.arange(32) * 0.7)[None, :] * np.ones((32, 1))
    image = (np.where(mask, 0.8, -0.6) + texture).astype(np.float32)[None]
    edges = canny_edges(image)[0] > 0
    square = canny_edges(np.where(mask, 0.8, -0.6).astype(np.float32)[None])[0] > 0
    assert (edges & band).sum() >= 0.8 * square.sum() > 0 and not (edges & ~band).any()
    assert (canny_edges(image, thresholds=(0.1, 0.2))[0] > 0)[~band].sum() > 50
