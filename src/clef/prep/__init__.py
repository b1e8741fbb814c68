"""Face preprocessing: MTCNN detection with 5 landmarks, similarity alignment, batched runs.

Entry points: :class:`MTCNN` (detector), :class:`AlignRecipe` / :func:`align_faces` (alignment),
:func:`run_prep` with :class:`PrepConfig` (the whole resumable run behind `clef prep`).
"""

from clef.prep.align import AlignRecipe, align_faces, similarity_transform
from clef.prep.mtcnn import MTCNN, DetectorConfig, Faces, find_weights
from clef.prep.pipeline import PrepConfig, PrepSummary, run_prep

__all__ = [
    "MTCNN",
    "AlignRecipe",
    "DetectorConfig",
    "Faces",
    "PrepConfig",
    "PrepSummary",
    "align_faces",
    "find_weights",
    "run_prep",
    "similarity_transform",
]
