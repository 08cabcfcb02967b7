"""Whole-shape moves: symmetry images of regions and of compartments, random kicks."""

import numpy as np
import pytest

from spinverse.recon.search.moves import KICKS, components, random_kick, symmetry_images


def test_components_splits_the_two_compartments(space, two_regions):
    parts = components(space, two_regions)
    assert [int(p.sum()) for p in parts] == [3, 2]
    assert np.array_equal(parts[0] | parts[1], two_regions)


def test_symmetry_images_hold_the_inverse_image(space, two_regions):
    """A symmetric copy of the truth has the truth among its images (or its point
    reflection, which the images identify with it)."""
    refl = space.point_reflection
    for tmap in space.symmetries[1:8]:
        twin = space.image(two_regions, tmap)
        images = symmetry_images(space, twin)
        assert all(space.is_valid(r) for r in images)
        keys = {r.tobytes() for r in images}
        assert len(keys) == len(images)
        assert twin.tobytes() not in keys
        assert (two_regions.tobytes() in keys
                or space.image(two_regions, refl).tobytes() in keys)


def test_compartment_images_move_one_compartment(space, two_regions):
    parts = components(space, two_regions)
    images = symmetry_images(space, two_regions, shifts=False)
    kept_small = [r for r in images if np.array_equal(r & parts[1], parts[1])]
    assert kept_small  # some images keep the small compartment and move the big one


@pytest.mark.parametrize("kind", KICKS)
def test_every_kick_gives_a_different_valid_region(space, two_regions, kind):
    rng = np.random.default_rng(3)
    made = 0
    for _ in range(20):
        out = random_kick(space, two_regions, rng, kind)
        if out is None:
            continue
        made += 1
        assert out[0] == kind
        assert space.is_valid(out[1]) and not np.array_equal(out[1], two_regions)
    if kind != "shift_patch" and kind != "shift_component":  # no shifts on 2 cubes/side
        assert made > 0


def test_unknown_kick_is_an_error(space, two_regions):
    with pytest.raises(ValueError, match="unknown kick"):
        random_kick(space, two_regions, np.random.default_rng(0), "teleport")
