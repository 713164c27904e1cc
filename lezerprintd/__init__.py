"""LezerPrint: one process that turns a Raspberry Pi into a 3D-printer appliance."""

__version__ = "0.1.0"
