"""What every stage shares and nothing stage-specific: errors (one root, a
subclass per stage), configuration, the records that cross stage lines
(``models``, ``records``), payload decoding, domain and network helpers, and
the low-level plumbing for big reports (mapped files, spilled Arrow batches,
process pipes).

``core`` imports no other dmarclens package; every other package may import it.
"""
