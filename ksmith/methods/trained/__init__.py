"""Trained editors (SERAC, MEND): editors whose own weights are learned on edits of the world.

Both train on a *training split* of the closed world (`split.py`): edit requests drawn, seeded,
from facts whose subjects no evaluated config touches, so an editor never sees an evaluated
entity. Training writes an editor folder (`editor.py`, ``ksmith train-editor``) that the
method's ``editor_path`` parameter points `ksmith update` cells at.
"""
