"""Live update: quiesce, save, hand over, exec, restore.

xen#1 side: engine.LiveUpdate (pre-flight, quiesce, save, handover).
xen#2 side: restore.restore_from_stream.  Shared: records and stream.
"""
