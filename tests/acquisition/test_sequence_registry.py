"""A new waveform is one declaration: a registered Sequence dataclass is known to YAML
configs, sequence_from_dict and the solvers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from spinverse.acquisition.protocol import (
    protocol_from_dict,
    protocol_to_dict,
    sequence_config,
)
from spinverse.acquisition.sequences import (
    PGSE,
    SEQUENCE_TYPES,
    Sequence,
    register_sequence,
    sequence_from_dict,
)
from spinverse.errors import ProtocolError
from spinverse.forward import simulate_signal
from spinverse.mesh.generators import box_grid


@pytest.fixture
def registry():
    """Restore the sequence registry after a test that adds to it."""
    saved = dict(SEQUENCE_TYPES)
    yield
    SEQUENCE_TYPES.clear()
    SEQUENCE_TYPES.update(saved)


def _declare_bipolar() -> type[Sequence]:
    @register_sequence
    @dataclass(frozen=True)
    class Bipolar(Sequence):
        """f = +1 on [0, δ), −1 on [δ, 2δ]; TE = 2δ µs."""

        delta: float = dataclasses.field(metadata={"doc": "lobe duration δ, µs"})
        kind: ClassVar[str] = "bipolar"

        @property
        def echo_time(self) -> float:
            return 2.0 * self.delta

        def _breakpoints(self) -> tuple[np.ndarray, np.ndarray]:
            d = self.delta
            return np.array([0.0, d, 2.0 * d]), np.array([1.0, -1.0])

    return Bipolar


def _config(*sequences: dict) -> dict:
    return {"diffusivity": 2e-3, "length_scale": 2.0, "bvalues": [0.0, 1000.0, 3000.0],
            "directions": [[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]], "sequences": list(sequences)}


def test_new_sequence_by_one_declaration(registry):
    bipolar = _declare_bipolar()
    d = 4000.0
    p = protocol_from_dict(_config({"type": "bipolar", "delta": d}))
    seq = p.sequences[0]
    assert isinstance(seq, bipolar)
    # the generic exact b-value integral: F = t, then 2δ − t, so ∫F² = 2δ³/3 µs³
    assert seq.bvalue_factor() == pytest.approx(2.0 * d**3 / 3.0, rel=1e-14)
    # its config model is derived from the dataclass, units included
    assert sequence_config("bipolar").model_fields["delta"].description == "lobe duration δ, µs"
    assert protocol_from_dict(protocol_to_dict(p)).sequences == p.sequences
    # the solvers take it: same signal as the equal piecewise-constant waveform
    same = protocol_from_dict(_config({"type": "piecewise", "durations": [d, d],
                                       "values": [1.0, -1.0]}))
    grid = box_grid(np.linspace(0, 6, 4), np.linspace(0, 4, 3), [0, 3])
    kappa = np.full(grid.n_faces, np.inf)
    s_new = simulate_signal(grid, kappa, p).signal
    s_ref = simulate_signal(grid, kappa, same).signal
    assert np.abs(s_new[0, 1:]).min() < 0.99 * np.abs(s_new[0, 0]).min()  # it encodes
    np.testing.assert_allclose(s_new, s_ref, rtol=1e-12, atol=0)


def test_registered_kind_checks_keys_and_types(registry):
    _declare_bipolar()
    with pytest.raises(Exception, match="mixing"):
        protocol_from_dict(_config({"type": "bipolar", "delta": 4000.0, "mixing": 1.0}))
    with pytest.raises(ProtocolError) as e:
        protocol_from_dict(_config({"type": "bipolar", "delta": "long"}))
    assert e.value.field == "sequences[0].delta"
    with pytest.raises(ProtocolError, match="bipolar"):
        sequence_from_dict({"type": "bipolr", "delta": 1.0})


def test_register_sequence_rejects_bad_declarations(registry):
    with pytest.raises(ValueError, match="already registered"):
        @register_sequence
        @dataclass(frozen=True)
        class OtherPGSE(PGSE):
            pass
    with pytest.raises(ValueError, match="kind"):
        @register_sequence
        @dataclass(frozen=True)
        class NoKind(Sequence):
            @property
            def echo_time(self) -> float:
                return 1.0
    with pytest.raises(TypeError):
        register_sequence(int)  # type: ignore[arg-type]


def test_unknown_type_lists_the_registered_ones():
    with pytest.raises(ProtocolError) as e:
        protocol_from_dict(_config({"type": "trapezoid", "delta": 1.0}))
    assert all(kind in e.value.message for kind in SEQUENCE_TYPES)
    assert e.value.field == "sequences[0].type"
