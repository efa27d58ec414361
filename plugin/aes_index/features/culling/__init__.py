"""Culling: group bursts and near-duplicates, pick the keeper of each group, flag failures.

Stages (each its own module):

    facts.py    during decode: capture time, camera, sharpness, clipping, perceptual signature
    grouping.py bursts (same camera, close in time, alike) and duplicates (alike anywhere),
                incremental and deterministic, kept in the index (index/store/culling.py holds the SQL)
    keeper.py   the pick of each group by a documented rule, with its reason in words;
                a person's own pick or rating in the group wins
    cull.py     the operation every caller runs: group, pick, store (the CLI's `cull`)

What the photo managers show is written through the targets (aes_index.targets) under the
same rules as star ratings: ours only where a person set nothing, journaled, undoable.
"""

from .model import FLAGS, Group, Member

__all__ = ["FLAGS", "Group", "Member"]
