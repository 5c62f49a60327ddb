"""Quantum-chemistry oracles (PySCF, SA-CASSCF excited states, any ASE calculator) and cached, parallel labelling."""

from __future__ import annotations

from nearsight.qm.casscf import SACASSCFOracle
from nearsight.qm.export import export_extxyz
from nearsight.qm.labelling import LabellingResult, LabelStore, label_hash, label_structures
from nearsight.qm.oracles import (
    ASECalculatorOracle,
    Label,
    Oracle,
    OracleError,
    PySCFOracle,
    describe,
    geometry_hash,
)

__all__ = [
    "ASECalculatorOracle",
    "Label",
    "LabelStore",
    "LabellingResult",
    "Oracle",
    "OracleError",
    "PySCFOracle",
    "SACASSCFOracle",
    "describe",
    "export_extxyz",
    "geometry_hash",
    "label_hash",
    "label_structures",
]
