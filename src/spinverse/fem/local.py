"""Element matrices of linear (P1) tetrahedra, vectorised over all elements.

All quantities in µm (coordinates), µm² (areas), µm³ (volumes), D in µm²/µs.
"""

from __future__ import annotations

import numpy as np

_EYE4 = np.eye(4)
_EYE3 = np.eye(3)


def barycentric_gradients(points: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the 4 barycentric (hat) functions of every tet.

    Returns ``(grads, volumes)`` with ``grads`` (T, 4, 3) in 1/µm and ``volumes`` (T,)
    in µm³ (absolute values, so vertex orientation does not matter).
    """
    x = points[tets]  # (T, 4, 3)
    jac = (x[:, 1:] - x[:, :1]).transpose(0, 2, 1)  # columns x_i - x_0, (T, 3, 3)
    det = np.linalg.det(jac)
    inv = np.linalg.inv(jac)  # rows are grad(lambda_1..3)
    grads = np.concatenate([-inv.sum(axis=1, keepdims=True), inv], axis=1)
    return grads, np.abs(det) / 6.0


def mass_blocks(volumes: np.ndarray) -> np.ndarray:
    """(T, 4, 4) consistent P1 mass blocks, V (1 + δ_ij) / 20, in µm³."""
    return volumes[:, None, None] * (1.0 + _EYE4) / 20.0


def stiffness_blocks(grads: np.ndarray, volumes: np.ndarray, diffusivity: float) -> np.ndarray:
    """(T, 4, 4) P1 stiffness blocks D V ∇φ_i·∇φ_j, in µm³/µs."""
    return diffusivity * volumes[:, None, None] * np.einsum("tid,tjd->tij", grads, grads)


def moment_blocks(points: np.ndarray, tets: np.ndarray, volumes: np.ndarray) -> np.ndarray:
    """(3, T, 4, 4) first-moment blocks ∫ x_d φ_i φ_j over each tet, in µm⁴.

    Uses ∫ φ_i φ_j φ_k = V (1 + δ_ij + δ_ik + δ_jk + 2 δ_ij δ_jk) / 120.
    """
    x = points[tets]  # (T, 4, 3)
    xsum = x.sum(axis=1)  # (T, 3)
    blocks = (
        (1.0 + _EYE4)[None, :, :, None] * xsum[:, None, None, :]
        + x[:, :, None, :]
        + x[:, None, :, :]
        + 2.0 * _EYE4[None, :, :, None] * x[:, :, None, :]
    )
    return (volumes[:, None, None, None] * blocks / 120.0).transpose(3, 0, 1, 2)


def face_mass_blocks(areas: np.ndarray) -> np.ndarray:
    """(F, 3, 3) P1 mass blocks on triangles, A (1 + δ_ab) / 12, in µm²."""
    return areas[:, None, None] * (1.0 + _EYE3) / 12.0
