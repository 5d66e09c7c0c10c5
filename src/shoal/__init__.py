"""Shoal: a self-hostable implementation of Azure Batch custom-image pools.

Layers (see ARCHITECTURE.md): ``api`` (thin HTTP routes) -> ``domain`` (rules) -> ``store`` (rows);
``reconcilers`` drive desired state through ``runtime``; ``core`` holds I/O-free building blocks.
"""

__version__ = "0.1.0"
