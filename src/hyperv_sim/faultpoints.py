"""Named fault-injection points of a live update, in the order an update
reaches them: what lu_fault= and lu_stop= on the boot line, and the
toolstack's lu-fault, may name.  Kept out of the engine so that the boot
line can check a name without importing it."""
from xen_public import lustream as ls

# The point of no return lies between "image-check" and the exec; "save:<RECORD>"
# fails the save as it is about to write the first record of that kind.
SAVE_RECORD_FAULTS = tuple("save:" + name for _, name in sorted(ls.RECORD_NAMES.items())
                           if name != "END")
FAULTS_BEFORE_PONR = ("preflight", "quiesce-hvm", "quiesce-pv", "save") + SAVE_RECORD_FAULTS + \
    ("stream-alloc", "mfn-array", "breadcrumb", "image-check")
# xen#2's: started but nothing read yet, then each step of the restore, and
# "unpause" once every pass is done but before the stream is let go.
FAULTS_AFTER_PONR = ("restore-start", "restore-validate", "restore-pass0", "restore-pass1",
                     "restore-pass2", "unpause")
# After the commit, with the guests running again: the deferred part of the
# frame-table rebuild (HVM and PVH guests' entries, then the free frames';
# the stop comes halfway through these).  A stop point (lu_stop=) only:
# nothing is left to halt to, a recover would replay a stream the guests
# have outrun.
FAULTS_AFTER_COMMIT = ("frametable-deferred",)
STOP_POINTS = FAULTS_AFTER_PONR + FAULTS_AFTER_COMMIT
# Not failures: acts the seed forbids xen#2 (docs/iommu.md), done once the
# guests run again, to show that `verify` catches each: zero an IOMMU table
# frame of a device's domain, rewrite the root-table pointer, invalidate
# the IOTLB and rebuild the tables.
FORBIDDEN_ACTS = ("iommu-zero-table", "iommu-rewrite-root", "iommu-flush-rebuild", "iommu-scrub-pi",
                  "iommu-drop-resume-interrupt")
FAULT_POINTS = FAULTS_BEFORE_PONR + FAULTS_AFTER_PONR
# For error messages: the save:<RECORD> points as one entry.
FAULT_POINTS_SUMMARY = ", ".join(p for p in FAULT_POINTS if not p.startswith("save:")).replace(
    "save,", "save, save:<RECORD> (e.g. save:LU_DOMAIN),") + "; or a forbidden act: " + ", ".join(FORBIDDEN_ACTS)


