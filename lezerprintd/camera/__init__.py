"""The camera: one capture pipeline shared by every viewer, snapshots and timelapses."""
