"""Exact matrix-formalism signals (spinverse.solvers.reference) against ../shared/validation.

Units: µm, µs, D in µm²/µs, κ in µm/µs, b in s/mm² (= µs/µm²), λ in 1/µs.

Tolerances against exact_signals.json: the JSON prints E with 6 decimals and states that it
is converged to <= 1e-7 in its eigen truncation, so a correct value may differ from the
printed one by half a unit of the 6th decimal plus 1e-7: |E − E_json| <= 6e-7 (tighter than
the 1e-6 + half-unit budget). The free signal is printed to 10 decimals (or 6 significant
figures), adc_over_D to 5 decimals (|Δ| <= 5e-6 + 1e-7), λ2 to 4 significant figures (half a
unit of the 4th figure). Our own series are converged to ~1e-9.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import linalg, special

from spinverse.errors import ProtocolError
from spinverse.solvers import reference as ex

JSON_PATH = Path(__file__).resolve().parents[3] / "shared" / "validation" / "exact_signals.json"

#: Half a unit of the 6th decimal plus the JSON's stated truncation error (1e-7).
E_ATOL = 0.5e-6 + 1e-7
D = 2e-3  # µm²/µs
P1 = (10_000.0, 20_000.0)  # (δ, Δ) µs
B_P1 = np.array([1000.0, 2000.0, 3000.0, 4000.0, 5000.0])  # s/mm²

SIGNALS = {
    "sphere": ex.sphere_signal,
    "cylinder_perpendicular": ex.cylinder_signal,
    "slab_perpendicular": ex.slab_signal,
}
EIGENDATA = {
    "sphere": ex.ball_eigendata,
    "cylinder_perpendicular": ex.disk_eigendata,
    "slab_perpendicular": ex.slab_eigendata,
}
FAST = settings(max_examples=15, deadline=None, derandomize=True)


@pytest.fixture(scope="module")
def validation() -> dict:
    if not JSON_PATH.is_file():
        pytest.skip(f"{JSON_PATH} not available")
    return json.loads(JSON_PATH.read_text())


def _protocol(v: dict) -> tuple[np.ndarray, float, float, float]:
    p = v["protocol"]
    return (
        np.asarray(v["bvalues"], float),
        float(p["delta_us"]),
        float(p["Delta_us"]),
        v["diffusivity"],
    )


def _size(row: dict) -> float:
    return float(row.get("radius_um", row.get("width_um")))


# --------------------------------------------------------------------------- JSON values


def test_free_signal_matches_json(validation: dict) -> None:
    b, _, _, diff = _protocol(validation)
    e = ex.free_signal(b, diff)
    # printed to 10 decimals or 6 significant figures: half a unit of either
    tol = np.maximum(0.5e-10, 0.5e-5 * np.abs(e)) + 1e-15
    assert np.all(np.abs(e - np.asarray(validation["free"]["E"])) <= tol)


@pytest.mark.parametrize("index", range(6))
def test_impermeable_signals_match_json(validation: dict, index: int) -> None:
    b, delta, Delta, diff = _protocol(validation)
    row = validation["impermeable"][index]
    e = SIGNALS[row["domain"]](_size(row), b, delta, Delta, diff)
    np.testing.assert_allclose(e, row["E"], rtol=0, atol=E_ATOL)


@pytest.mark.parametrize("index", range(6))
def test_adc_over_D_matches_json(validation: dict, index: int) -> None:
    """adc_over_D is the low-b limit −(dE/db)/D at b → 0 (exact second order in q)."""
    _, delta, Delta, diff = _protocol(validation)
    row = validation["impermeable"][index]
    eig = EIGENDATA[row["domain"]](_size(row), diff, n_modes=300)
    assert ex.pgse_adc(eig, delta, Delta) / diff == pytest.approx(row["adc_over_D"], abs=5.1e-6)


@pytest.mark.parametrize("index", range(7))
def test_two_slab_signals_match_json(validation: dict, index: int) -> None:
    b, delta, Delta, diff = _protocol(validation)
    table = validation["permeable_two_slab"]
    row = table["rows"][index]
    kappa = float(row["kappa"])  # "inf" -> inf
    e = ex.two_slab_signal(table["a_um"], table["b_um"], kappa, b, delta, Delta, diff)
    np.testing.assert_allclose(e, row["E"], rtol=0, atol=E_ATOL)


def test_exchange_rate_matches_json(validation: dict) -> None:
    table = validation["permeable_two_slab"]
    for row in validation["exchange_rate"]["rows"]:
        lam2 = ex.exchange_rate(
            table["a_um"], table["b_um"], row["kappa"], validation["diffusivity"]
        )
        ref = row["lambda2"]
        half_unit = 0.5 * 10.0 ** (math.floor(math.log10(ref)) - 3)  # 4 significant figures
        assert abs(lam2 - ref) <= half_unit, (row, lam2)


def test_json_edge_rows_are_consistent(validation: dict) -> None:
    """κ = 0 equals the width-a slab (a = b) and κ = inf the width-(a+b) slab, in the JSON too."""
    rows = {str(r["kappa"]): r["E"] for r in validation["permeable_two_slab"]["rows"]}
    slabs = {r["width_um"]: r["E"] for r in validation["impermeable"] if "width_um" in r}
    assert rows["0.0"] == slabs[5] and rows["inf"] == slabs[10]


# --------------------------------------------------------------------------- sum rules


@pytest.mark.parametrize(
    ("domain", "build", "size"),
    [
        ("slab", ex.slab_eigendata, 7.0),
        ("disk", ex.disk_eigendata, 4.0),
        ("ball", ex.ball_eigendata, 4.0),
    ],
)
def test_moment_sum_rule(domain: str, build, size: float) -> None:
    """Σ_{k≥1} B_0k² -> variance (L²/12, R²/4, R²/5); the partial sums increase to it."""
    exact = ex.moment_sum(domain, size)
    deficits = [exact - ex.truncated_moment_sum(build(size, D, n_modes=n)) for n in (50, 200, 600)]
    assert 0 < deficits[2] < deficits[1] < deficits[0]
    assert deficits[2] < 2e-4 * exact


@pytest.mark.parametrize(
    ("build", "size", "factor"),
    [
        (ex.slab_eigendata, 7.0, 1 / 120),
        (ex.disk_eigendata, 4.0, 7 / 96),
        (ex.ball_eigendata, 4.0, 8 / 175),
    ],
)
def test_inverse_eigenvalue_sum_rule(build, size: float, factor: float) -> None:
    """Σ_{k≥1} B_0k²/λ_k = L⁴/(120D), 7R⁴/(96D), 8R⁴/(175D) (Neuman's long-pulse constants):
    checks every B_0k and λ_k, not just their normalisation."""
    eig = build(size, D, n_modes=600)
    c = eig.moment[0, 1:]
    assert np.sum(c * c / eig.eigvals[1:]) == pytest.approx(factor * size**4 / D, rel=1e-7)


def test_two_slab_sum_rule_any_kappa() -> None:
    """The coordinate variance over [0, a + b] does not depend on κ (two zero modes at κ = 0)."""
    for kappa in (0.0, 1e-6, 1e-3, 1.0, math.inf):
        eig = ex.two_slab_eigendata(3.0, 7.0, kappa, D, n_modes=400)
        assert ex.truncated_moment_sum(eig) == pytest.approx(100.0 / 12.0, rel=1e-7)


def test_moment_sum_rejects_unknown_domain() -> None:
    with pytest.raises(ValueError, match="unknown domain"):
        ex.moment_sum("torus", 1.0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- eigen-data


def test_bessel_derivative_zeros() -> None:
    for n in (0, 1, 4, 25):
        z = ex.bessel_derivative_zeros(n, 80.0)
        np.testing.assert_allclose(z, special.jnp_zeros(n, z.size), rtol=0, atol=1e-12)
    for l in (0, 1, 7, 8, 40):
        z = ex.bessel_derivative_zeros(l, 200.0, spherical=True)
        assert np.all(np.diff(z) > 3.0) and z[-1] > 195.0
        residual = special.spherical_jn(l, z, derivative=True) / special.spherical_jn(l, z)
        assert np.abs(residual).max() < 1e-12
    # j_0' = −j_1: zeros are the roots of tan x = x
    z0 = ex.bessel_derivative_zeros(0, 20.0, spherical=True)
    np.testing.assert_allclose(np.tan(z0), z0, rtol=1e-9)


def _mode_orders(eig: ex.EigenData, radius: float, spherical: bool) -> tuple[np.ndarray, ...]:
    """(order, α) of each mode, identified by J_n'(α) = 0 (or j_l'(α) = 0)."""
    alpha = radius * np.sqrt(eig.eigvals / D)
    orders = []
    for a in alpha:
        if a == 0:
            orders.append(0)
            continue
        for n in range(int(a) + 2):
            d1 = special.spherical_jn(n, a, True) if spherical else special.jvp(n, a)
            if abs(d1) < 1e-9:
                orders.append(n)
                break
    assert len(orders) == alpha.size
    return np.asarray(orders), alpha


@pytest.mark.parametrize("spherical", [False, True])
def test_moment_matrix_against_quadrature(spherical: bool) -> None:
    """B_jk = ∫ x φ_j φ_k by brute-force tensor quadrature of the normalised eigenfunctions."""
    R = 3.0
    build = ex.ball_eigendata if spherical else ex.disk_eigendata
    eig = build(R, D, n_modes=12)
    order, alpha = _mode_orders(eig, R, spherical)
    r, wr = np.polynomial.legendre.leggauss(120)
    r, wr = 0.5 * R * (r + 1), 0.5 * R * wr
    if spherical:
        c, wc = np.polynomial.legendre.leggauss(40)  # c = cos θ, dΩ = 2π dc
        radial = special.spherical_jn(order[:, None], alpha[:, None] * r / R)
        ang = np.array([special.eval_legendre(l, c) for l in order])
        phi = radial[:, :, None] * ang[:, None, :]
        w = (wr * r**2)[:, None] * (2 * np.pi * wc)[None, :]
        x = r[:, None] * c[None, :]
    else:
        th = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        radial = special.jv(order[:, None], alpha[:, None] * r / R)
        ang = np.cos(order[:, None] * th[None, :])
        phi = radial[:, :, None] * ang[:, None, :]
        w = (wr * r)[:, None] * np.full(th.size, 2 * np.pi / th.size)[None, :]
        x = r[:, None] * np.cos(th)[None, :]
    phi /= np.sqrt(np.einsum("krt,rt->k", phi**2, w))[:, None, None]
    B = np.einsum("jrt,krt,rt->jk", phi, phi, w * x)
    np.testing.assert_allclose(eig.moment, B, rtol=0, atol=1e-12)
    np.testing.assert_allclose(eig.nu0, np.einsum("krt,rt->k", phi, w), rtol=0, atol=1e-12)


def _finite_volume_two_slab(a: float, b: float, kappa: float, h: float, n: int) -> np.ndarray:
    """n lowest eigenvalues of a cell-centred finite-volume two-slab operator (O(h²))."""
    na, nb = round(a / h), round(b / h)
    g = np.full(na + nb - 1, D / h)  # face conductances (µm/µs)
    g[na - 1] = 1.0 / (h / D + 1.0 / kappa)  # two half cells in series with the membrane
    diag = np.zeros(na + nb)
    diag[:-1] += g
    diag[1:] += g
    return linalg.eigh_tridiagonal(diag / h, -g / h, select="i", select_range=(0, n - 1))[0]


@pytest.mark.parametrize(("a", "b", "kappa"), [(3.0, 7.0, 1e-3), (5.0, 5.0, 2e-4), (2.0, 8.0, 0.1)])
def test_two_slab_eigenvalues_match_finite_volumes(a: float, b: float, kappa: float) -> None:
    lam = ex.two_slab_eigenvalues(a, b, kappa, D, 8)
    fv = _finite_volume_two_slab(a, b, kappa, 0.005, 8)
    np.testing.assert_allclose(lam[1:], fv[1:], rtol=1e-4)
    assert lam[0] == 0.0
    k = np.sqrt(lam / D)
    residual = D * k * np.sin(k * a) * np.sin(k * b) - kappa * np.sin(k * (a + b))
    assert np.abs(residual).max() < 1e-14


def test_two_slab_spectrum_limits() -> None:
    """κ = 0: union of both spectra (double zero); κ = inf: one slab; continuity at both ends."""
    lam0 = ex.two_slab_eigenvalues(3.0, 7.0, 0.0, D, 10)
    union = np.sort(
        np.concatenate(
            [D * (np.arange(10) * np.pi / 3.0) ** 2, D * (np.arange(10) * np.pi / 7.0) ** 2]
        )
    )[:10]
    np.testing.assert_allclose(lam0, union, rtol=1e-14)
    assert lam0[0] == lam0[1] == 0.0
    np.testing.assert_allclose(ex.two_slab_eigenvalues(3.0, 7.0, 1e-12, D, 10), lam0, atol=1e-11)
    lam_inf = ex.two_slab_eigenvalues(3.0, 7.0, math.inf, D, 10)
    np.testing.assert_allclose(lam_inf, D * (np.arange(10) * np.pi / 10.0) ** 2, rtol=1e-14)
    np.testing.assert_allclose(ex.two_slab_eigenvalues(3.0, 7.0, 1e8, D, 10), lam_inf, rtol=1e-8)


def test_near_degenerate_pairs_at_small_kappa() -> None:
    """a = b: every level is a pair split by O(κ) (2κ/a for the zero level, 4κ/a above);
    both members are found, in order."""
    a, kappa = 5.0, 1e-9
    lam = ex.two_slab_eigenvalues(a, a, kappa, D, 12)
    pairs = lam.reshape(6, 2)
    assert np.all(pairs[:, 1] > pairs[:, 0])
    split = np.r_[2.0, np.full(5, 4.0)] * kappa / a
    np.testing.assert_allclose(pairs[:, 1] - pairs[:, 0], split, rtol=1e-5)


def test_exchange_rate_limits() -> None:
    for kappa in (1e-10, 1e-8):
        assert ex.exchange_rate(3.0, 7.0, kappa, D) == pytest.approx(
            kappa * (1 / 3 + 1 / 7), rel=1e-5
        )
    assert ex.exchange_rate(3.0, 7.0, 0.0, D) == 0.0
    assert ex.exchange_rate(3.0, 7.0, math.inf, D) == pytest.approx(
        D * (np.pi / 10.0) ** 2, rel=1e-14
    )


# --------------------------------------------------------------------------- propagation


def test_adc_is_the_low_b_slope() -> None:
    eig = ex.ball_eigendata(6.0, D, n_modes=200)
    adc = ex.pgse_adc(eig, 5000.0, 30000.0)
    e = ex.matrix_formalism_pgse(eig.eigvals, eig.moment, eig.nu0, [0.01], 5000.0, 30000.0)
    assert -math.log(e[0]) / 0.01 == pytest.approx(adc, rel=1e-5)


def test_adiabatic_elimination_matches_full_propagation() -> None:
    eig = ex.ball_eigendata(5.0, D, n_modes=250)
    args = (eig.eigvals, eig.moment, eig.nu0, [1000.0, 5000.0], *P1)
    full = ex.matrix_formalism_pgse(*args)
    reduced = ex.matrix_formalism_pgse(*args, n_exact=50)
    np.testing.assert_allclose(reduced, full, rtol=0, atol=2e-8)


def test_adaptive_truncation_is_converged() -> None:
    """Default tolerance: within ~1e-9 of much longer series."""
    e = ex.sphere_signal(5.0, B_P1, *P1, D)
    eig = ex.ball_eigendata(5.0, D, n_modes=1200)
    ref = ex.matrix_formalism_pgse(eig.eigvals, eig.moment, eig.nu0, B_P1, *P1, n_exact=200)
    np.testing.assert_allclose(e, ref, rtol=0, atol=2e-9)
    e = ex.two_slab_signal(3.0, 7.0, 1e-3, B_P1, *P1, D)
    ref = ex.two_slab_signal(3.0, 7.0, 1e-3, B_P1, *P1, D, n_modes=250)
    np.testing.assert_allclose(e, ref, rtol=0, atol=1e-9)


def test_kappa_zero_is_volume_weighted_pair_of_slabs() -> None:
    e = ex.two_slab_signal(3.0, 7.0, 0.0, B_P1, *P1, D)
    avg = (3.0 * ex.slab_signal(3.0, B_P1, *P1, D) + 7.0 * ex.slab_signal(7.0, B_P1, *P1, D)) / 10
    np.testing.assert_allclose(e, avg, rtol=0, atol=2e-9)


def test_bzero_and_shape() -> None:
    e = ex.slab_signal(5.0, [[0.0, 1000.0], [2000.0, 0.0]], *P1, D)
    assert e.shape == (2, 2) and e[0, 0] == 1.0 and e[1, 1] == 1.0


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ProtocolError):
        ex.slab_signal(5.0, B_P1, 20_000.0, 10_000.0, D)  # δ > Δ
    with pytest.raises(ProtocolError):
        ex.slab_signal(5.0, [-1.0], *P1, D)
    with pytest.raises(ProtocolError):
        ex.two_slab_signal(5.0, 5.0, -1e-3, B_P1, *P1, D)
    with pytest.raises(ProtocolError):
        ex.sphere_signal(0.0, B_P1, *P1, D)
    with pytest.raises(ProtocolError):
        ex.free_signal(B_P1, math.nan)


# --------------------------------------------------------------------------- properties


def _q(b: float, delta: float, Delta: float) -> float:
    return math.sqrt(b / (delta * delta * (Delta - delta / 3.0)))


@FAST
@given(
    width=st.floats(1.0, 20.0),
    delta=st.floats(500.0, 20_000.0),
    gap=st.floats(0.0, 40_000.0),
    phase=st.floats(0.2, math.pi),
)
def test_slab_signal_in_unit_interval_and_decreasing(width, delta, gap, phase) -> None:
    """E = ⟨cos qΦ⟩ with |Φ| <= δL: in (0, 1] and decreasing in b while qδL <= π."""
    Delta = delta + gap
    q_max = phase / (delta * width)
    b_max = q_max**2 * delta**2 * (Delta - delta / 3.0)
    b = np.linspace(0.0, b_max, 6)
    e = ex.slab_signal(width, b, delta, Delta, D)
    assert np.all(e > 0) and np.all(e <= 1.0 + 1e-12)
    assert np.all(np.diff(e) <= 1e-9)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    radius=st.floats(1.0, 6.0),
    delta=st.floats(3000.0, 15_000.0),
    gap=st.floats(0.0, 20_000.0),
    sphere=st.booleans(),
)
def test_curved_signal_in_unit_interval_and_decreasing(radius, delta, gap, sphere) -> None:
    Delta = delta + gap
    q_max = math.pi / (delta * 2.0 * radius)  # |Φ| <= δ·2R
    b = np.linspace(0.0, q_max**2 * delta**2 * (Delta - delta / 3.0), 5)
    f = ex.sphere_signal if sphere else ex.cylinder_signal
    e = f(radius, b, delta, Delta, D, tol=1e-8)
    assert np.all(e > 0) and np.all(e <= 1.0 + 1e-12)
    assert np.all(np.diff(e) <= 2e-8)


@FAST
@given(n=st.integers(2, 40), width=st.floats(1.0, 30.0), b=st.floats(0.0, 2e4))
def test_truncated_propagation_is_a_contraction(n, width, b) -> None:
    """Any truncation keeps 0 <= E <= 1 (Λ >= 0 makes every factor a contraction)."""
    e = ex.slab_signal(width, [b], 3000.0, 9000.0, D, n_modes=n)
    assert 0.0 <= e[0] <= 1.0 + 1e-12


@FAST
@given(a=st.floats(1.0, 9.0), b=st.floats(1.0, 9.0))
def test_two_slab_limits_and_mirror_symmetry(a, b) -> None:
    """κ -> large approaches the single slab; mirroring (a, b) -> (b, a) changes nothing."""
    slab = ex.slab_signal(a + b, B_P1, *P1, D)
    big = ex.two_slab_signal(a, b, 1e3, B_P1, *P1, D, tol=1e-8)
    np.testing.assert_allclose(big, slab, rtol=0, atol=1e-5)
    e = ex.two_slab_signal(a, b, 1e-3, B_P1, *P1, D, tol=1e-8)
    mirrored = ex.two_slab_signal(b, a, 1e-3, B_P1, *P1, D, tol=1e-8)
    np.testing.assert_allclose(e, mirrored, rtol=0, atol=3e-8)
    assert np.all(e > 0) and np.all(e <= 1.0)
