"""The worker layer: the only part of the core that touches Qt (QtCore only)."""
