"""Instruction-evolution data engine (Instruction Fusion, TaCIE) on Ray."""

__version__ = "0.1.0"
