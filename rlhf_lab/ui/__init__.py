"""The notebook UI: raters and a flag panel that record judgments into a `rlhf_lab.feedback.store.FeedbackStore`,
and the instructor's dashboard that watches a class store.

The core never imports this package; it imports the core. Widgets only emit events, and each rater is a thin
controller that turns them into store calls.
"""

from rlhf_lab.ui.dashboard import InstructorDashboard
from rlhf_lab.ui.parts import FlagPanel
from rlhf_lab.ui.raters import LikertRater, PairwiseRater, RankingRater
from rlhf_lab.ui.thumbs import ThumbsRater

__all__ = ["PairwiseRater", "LikertRater", "RankingRater", "ThumbsRater", "FlagPanel", "InstructorDashboard"]
