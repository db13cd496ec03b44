"""The lab's core, below everything else: user-facing errors, the strict config base, the `Lab` handle.

``db``, ``engine``, ``findings`` and ``lab_app`` import it; it imports none of them (and nothing
heavy), so importing it never loads storage, torch or the engine's allocator settings.
"""
