"""Regions of tets: membrane faces, validity, repair, symmetries and shifts."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from spinverse.mesh.benchmark import benchmark_grid, case_barrier, enclosed_tets
from spinverse.mesh.generators import bcc_grid
from spinverse.mesh.phantoms import barrier_faces
from spinverse.recon.metrics import structural_validity
from spinverse.recon.search.regions import RegionSpace, cube_group


def test_cube_group_has_48_signed_permutations_identity_first():
    g = cube_group()
    assert g.shape == (48, 3, 3)
    assert np.allclose(g[0], np.eye(3))
    assert len({m.tobytes() for m in g}) == 48
    assert sum(np.linalg.det(m) > 0 for m in g) == 24


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**48 - 1))
def test_membrane_is_the_phantom_barrier_and_bad_edges_match_the_metrics(space, bits):
    region = np.array([(bits >> k) & 1 for k in range(space.grid.n_tets)], dtype=bool)
    assert np.array_equal(space.faces(region), barrier_faces(space.grid, region))
    kappa = space.kappa(region)
    assert set(np.unique(kappa)) <= {1e-5, 0.1}
    assert np.array_equal(np.flatnonzero(kappa == 1e-5), space.faces(region))
    if region.any():
        assert space.bad_edges(region) == structural_validity(
            space.grid, space.faces(region))["bad_edges"]
    repaired = space.repair(region)
    assert np.all(repaired >= region)  # repair only adds tets
    if region.any() and not repaired.all():
        assert space.bad_edges(repaired) == 0


def test_benchmark_truths_are_valid_connected_regions():
    grid = benchmark_grid()
    space = RegionSpace(grid)
    for case in ("000", "016", "019"):
        truth = enclosed_tets(grid, case_barrier(case))
        assert space.is_valid(truth)
        assert space.components(truth) == 1
        assert np.array_equal(space.faces(truth), case_barrier(case))


def test_boundary_tets_are_the_tets_next_to_the_membrane(space):
    region = np.zeros(space.grid.n_tets, dtype=bool)
    region[5] = True
    b = space.boundary_tets(region)
    assert set(b) == {5, *space.neighbours[5].tolist()}


def test_bcc_grid_has_the_full_cube_group_and_lattice_shifts(space):
    assert len(space.symmetries) == 48
    assert np.array_equal(space.symmetries[0], np.arange(space.grid.n_tets))
    assert space.point_reflection is not None
    assert len(space.shifts) == 0  # 2 cubes per side: no tet has room to move
    big = RegionSpace(bcc_grid(4))
    # 6 axis steps + 8 half-diagonals are the shortest translations of a BCC lattice.
    assert len(big.nearest_shift_maps()) == 14
    assert len(big.shifts) == 34
    region = np.linalg.norm(big.grid.tet_centroids, axis=1) < 5.0
    for tmap, s in zip(big.shift_maps, big.shifts, strict=True):
        moved = big.image(region, tmap)
        assert np.isclose(big.grid.volumes[moved].sum(), big.grid.volumes[region].sum())
        shift = big.grid.tet_centroids[moved].mean(0) - big.grid.tet_centroids[region].mean(0)
        assert np.allclose(shift, s)


def test_images_preserve_volume_and_twin_overlap_finds_the_symmetry(space, two_regions):
    v = space.grid.volumes
    for tmap in space.symmetries:
        img = space.image(two_regions, tmap)
        assert np.isclose(v[img].sum(), v[two_regions].sum())
        dice, _, _ = space.best_twin_overlap(img, two_regions)
        assert dice == 1.0
    assert space.overlap(two_regions, two_regions) == 1.0
    assert space.overlap(two_regions, ~two_regions) == 0.0
