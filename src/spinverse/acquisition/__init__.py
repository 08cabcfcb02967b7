"""Acquisition: gradient waveforms (times in µs), directions, FSL tables and protocols.

Units: b in s/mm² (= µs/µm²), q = γG in 1/(µm·µs), diffusivity µm²/µs, lengths µm.
"""

from __future__ import annotations

from spinverse.acquisition.directions import fibonacci_directions, normalise_directions
from spinverse.acquisition.fsl import (
    read_bvals,
    read_bvals_bvecs,
    read_bvecs,
    write_bvals_bvecs,
)
from spinverse.acquisition.protocol import (
    CosOGSEConfig,
    DoublePGSEConfig,
    FibonacciConfig,
    PGSEConfig,
    PiecewiseConfig,
    Protocol,
    ProtocolConfig,
    load_protocol,
    protocol_from_arrays,
    protocol_from_dict,
    protocol_to_arrays,
    protocol_to_dict,
    published_protocol,
    save_protocol,
    sequence_config,
)
from spinverse.acquisition.sequences import (
    PGSE,
    SEQUENCE_TYPES,
    CosOGSE,
    DoublePGSE,
    PiecewiseConstant,
    Sequence,
    register_sequence,
    sequence_from_dict,
)

__all__ = [
    "PGSE",
    "SEQUENCE_TYPES",
    "CosOGSE",
    "CosOGSEConfig",
    "DoublePGSE",
    "DoublePGSEConfig",
    "FibonacciConfig",
    "PGSEConfig",
    "PiecewiseConfig",
    "PiecewiseConstant",
    "Protocol",
    "ProtocolConfig",
    "Sequence",
    "fibonacci_directions",
    "load_protocol",
    "normalise_directions",
    "protocol_from_arrays",
    "protocol_from_dict",
    "protocol_to_arrays",
    "protocol_to_dict",
    "published_protocol",
    "read_bvals",
    "read_bvals_bvecs",
    "read_bvecs",
    "save_protocol",
    "register_sequence",
    "sequence_config",
    "sequence_from_dict",
    "write_bvals_bvecs",
]
